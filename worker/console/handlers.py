"""What every console page and action shares: the ``Console`` state, the ``Base`` handler (login,
XSRF, read-only mode, security headers, flash messages, error pages, the audit log) and the two
pages that need no login (404 and the healthcheck).

Every page needs a login (unless the console runs on loopback without credentials); every
action is a POST that Tornado checks for its XSRF token, is refused in read-only mode, and is
logged on the ``console`` logger with the operator's name. What the pages show and
what the actions do is ``reseller_webhooks.worker.ops.actions``: the same code as the command line.
The pages live beside this module: ``login``, ``subscribers``, ``dead_letters``, ``lookup``; the
address of each in ``routes``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import redis
import tornado.web
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import ConfigError, UnavailableError
from reseller_webhooks.producers.refusals import refusal
from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.auth import LOCAL_OPERATOR, TOKEN_OPERATOR, Credentials
from reseller_webhooks.worker.console.guard import Guard
from reseller_webhooks.worker.console.jobs import Jobs
from reseller_webhooks.worker.console.sessions import Sessions
from reseller_webhooks.worker.console.throttle import Throttle
from reseller_webhooks.worker.errors import OperatorError, UnknownSubscriberError
from reseller_webhooks.worker.ops import outage
from reseller_webhooks.worker.ops.actions import Operations
from reseller_webhooks.worker.records.shapes import Trigger

log = logging.getLogger("reseller_webhooks.worker.console")

#: The session cookie (signed; holds a session id, see ``sessions``) and how long a login lasts.
SESSION_COOKIE = "rw_console"
SESSION_DAYS = 1
FLASH_COOKIE = "rw_console_flash"
#: On every answer: no framing (a click on an action button cannot be borrowed by another
#: site), nothing but this site's own CSS and forms, and nothing kept in caches (pages may
#: hold personal data).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Console:
    """What every handler shares."""

    ops: Operations
    credentials: Credentials
    sessions: Sessions
    read_only: bool
    #: Sends deliver triggers (Celery), made on first use.
    send_factory: Callable[[], Callable[[Sequence[Trigger]], None]]
    jobs: Jobs
    guard: Guard
    throttle: Throttle
    _send: Callable[[Sequence[Trigger]], None] | None = field(default=None, init=False)
    #: A job's thread and the server's both send.
    _sending: threading.Lock = field(default_factory=threading.Lock, init=False)

    def send(self, triggers: Sequence[Trigger]) -> None:
        with self._sending:
            if self._send is None:
                self._send = self.send_factory()
            self._send(triggers)


class Base(tornado.web.RequestHandler):
    console: Console
    #: Seconds the client must still wait after failed logins or tokens (0: none).
    locked_s = 0.0

    def initialize(self, console: Console) -> None:
        self.console = console
        # The client as a trusted proxy names it (else the peer itself), before anything logs it.
        request, headers = self.request, self.request.headers
        request.remote_ip, request.protocol = console.guard.client(
            str(request.remote_ip),
            request.protocol,
            headers.get("X-Forwarded-For"),
            headers.get("X-Forwarded-Proto"),
        )

    def set_cookie(self, name: str, value: str | bytes, *args: Any, **kwargs: Any) -> None:
        """Every cookie is ``Secure`` when the client came over HTTPS (itself or through a
        trusted proxy)."""
        if self.request.protocol == "https":
            kwargs["secure"] = True
        super().set_cookie(name, value, *args, **kwargs)

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    @property
    def ops(self) -> Operations:
        return self.console.ops

    def get_current_user(self) -> str | None:
        creds = self.console.credentials
        if not creds.required:
            return LOCAL_OPERATOR
        header = self.request.headers.get("Authorization")
        if header is not None:
            return TOKEN_OPERATOR if self._token(header) else None
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        return self.console.sessions.operator(raw.decode()) if raw else None

    def _token(self, header: str) -> bool:
        """Whether ``header`` carries the token; a wrong one is logged (never its value) and
        counts against the client's address, which is refused while locked."""
        subject = [("addr", str(self.request.remote_ip))]
        self.locked_s = self.console.throttle.wait_s(subject)
        if self.locked_s > 0:
            return False
        if self.console.credentials.bearer(header):
            return True
        log.warning("console: wrong token from %s", self.request.remote_ip)
        self.console.throttle.failed(subject)
        return False

    def refuse_if_locked(self) -> None:
        if self.locked_s > 0:
            raise tornado.web.HTTPError(
                429, reason=f"Too many failed attempts; try again in {math.ceil(self.locked_s)} s"
            )

    def check_xsrf_cookie(self) -> None:
        """A script sending the token in its ``Authorization`` header needs no XSRF token: a
        browser never adds that header on its own, so no other site can make it."""
        if self.request.headers.get("Authorization"):
            if self.current_user == TOKEN_OPERATOR:
                return
            self.refuse_if_locked()
        super().check_xsrf_cookie()

    def check_site(self) -> None:
        """Refuses another site's names and pages (DNS rebinding)."""
        guard, headers = self.console.guard, self.request.headers
        if not guard.host_allowed(self.request.host or ""):
            raise tornado.web.HTTPError(400, reason="Unknown host name")
        if self.request.method == "POST" and not guard.origin_allowed(headers.get("Origin")):
            raise tornado.web.HTTPError(403, reason="Not from a page of this console")

    def prepare(self) -> None:
        """Refuses another site, a locked-out client and actions in read-only mode."""
        self.check_site()
        if self.request.headers.get("Authorization") and self.current_user is None:
            self.refuse_if_locked()
        if self.request.method == "POST" and self.console.read_only and not self.session_action:
            raise tornado.web.HTTPError(403, reason="Read-only console")

    #: Logging in and out are allowed in read-only mode.
    session_action = False

    def audit(self, what: str, *args: object) -> None:
        """Log an action with who did it and from where."""
        log.info("console: %s (%s) " + what, self.current_user, self.request.remote_ip, *args)

    def flash(self, message: str) -> None:
        self.set_signed_cookie(
            FLASH_COOKIE, message, expires_days=None, httponly=True, samesite="Strict"
        )

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        flash = None
        if self.request.method == "GET":
            raw = self.get_signed_cookie(FLASH_COOKIE, max_age_days=1)
            if raw:
                flash = raw.decode()
                self.clear_cookie(FLASH_COOKIE)
        namespace.update(
            operator=self.current_user,
            read_only=self.console.read_only,
            login_required=self.console.credentials.required,
            flash=flash,
            iso_ms=views.iso_ms,
            iso_text=views.iso_text,
            age=views.age,
            success=views.success,
            attempt_result=views.attempt_result,
            delivery_facts=views.delivery_facts,
            qs=urlencode,
        )
        return namespace

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A plain page; Redis out of reach is a 503 that names neither its address nor its
        password (only the kind of failure)."""
        message = self._reason
        try:
            self.current_user  # noqa: B018  (known now, or never: the page names no one)
        except (redis.RedisError, OperationalError):
            self._current_user = None
        exc = kwargs.get("exc_info", (None, None, None))[1]
        kind = outage.REDIS.refusing if exc is not None and refusal(exc) else None
        if kind:
            self.set_status(503)
            message = (
                f"Redis refuses writes ({kind}): it is full or read-only, so nothing can be"
                " recorded, logins included; try again once an operator has freed it"
            )
        elif isinstance(exc, redis.RedisError | OperationalError):
            self.set_status(503)
            message = str(UnavailableError.from_exception(exc)) + "; try again shortly"
        elif isinstance(exc, UnknownSubscriberError):
            self.set_status(404)
            message = f"No subscriber {exc.subscriber_id!r} in the subscribers file"
        elif isinstance(exc, OperatorError | ConfigError):
            self.set_status(409 if isinstance(exc, OperatorError) else 500)
            message = str(exc)
        elif isinstance(exc, tornado.web.HTTPError) and exc.reason:
            message = exc.reason
        if status_code == 429 and self.locked_s:
            self.set_header("Retry-After", str(math.ceil(self.locked_s)))
        self.render("error.html", status=self.get_status(), message=message)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if outage.REDIS.refused(value, f"serving {self.request.method} {self.request.path}"):
            return  # logged once per outage
        if isinstance(value, redis.RedisError | OperationalError):
            log.warning("console: %s", UnavailableError.from_exception(value))
        elif isinstance(value, OperatorError | ConfigError):
            log.warning("console: %s", value)
        else:
            super().log_exception(typ, value, tb)

    def back(self, default: str) -> str:
        return views.local_path(self.get_body_argument("next", None), default)


class NotFound(Base):
    """Any other address: the console's own 404 page."""

    def prepare(self) -> None:
        self.check_site()
        raise tornado.web.HTTPError(404, reason="No such page")


class Health(tornado.web.RequestHandler):
    """For a container healthcheck: the console answers. ``ok``, or ``degraded: ...`` (still
    200: restarting the console would not help) while Redis refuses writes (logins cannot be
    recorded). It asks Redis only during such an outage, and writes nothing."""

    def initialize(self, console: Console) -> None:
        self.console = console

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        if outage.REDIS.refusing:
            store = self.console.ops.store
            try:
                outage.REDIS.probe(store.redis, store.keys)
            except redis.RedisError as exc:
                if not outage.REDIS.refused(exc, "probing Redis"):
                    raise
        kind = outage.REDIS.refusing
        self.write(f"degraded: Redis refuses writes ({kind})\n" if kind else "ok\n")
