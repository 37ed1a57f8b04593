"""The console's pages and actions.

Every page needs a login (unless the console runs on loopback without credentials); every
action is a POST that Tornado checks for its XSRF token, is refused in read-only mode, and is
logged on the ``console`` logger with the operator's name. What the pages show and
what the actions do is ``reseller_webhooks.worker.ops.actions``: the same code as the command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import redis
import tornado.web
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import ConfigError, UnavailableError
from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.auth import LOCAL_OPERATOR, TOKEN_OPERATOR, Credentials
from reseller_webhooks.worker.console.sessions import Sessions
from reseller_webhooks.worker.errors import (
    OperatorError,
    SubscribersDisabledError,
    UnknownSubscriberError,
)
from reseller_webhooks.worker.ops.actions import Operations, parse_since
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR, Trigger

log = logging.getLogger("reseller_webhooks.worker.console")

#: The session cookie (signed; holds a session id, see ``sessions``) and how long a login lasts.
SESSION_COOKIE = "rw_console"
SESSION_DAYS = 1
FLASH_COOKIE = "rw_console_flash"
#: A failed login answers this much later (slows guessing without blocking other requests).
FAILED_LOGIN_DELAY_S = 0.5
#: Most dead letters one page lists (the actions on "all matching" take every one).
DEAD_LETTERS_SHOWN = 500
#: Longest reason a disable may be given.
REASON_MAX = 200
#: Most delivery ids one log line names.
LOGGED_IDS = 20
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
    _send: Callable[[Sequence[Trigger]], None] | None = field(default=None, init=False)

    def send(self, triggers: Sequence[Trigger]) -> None:
        if self._send is None:
            self._send = self.send_factory()
        self._send(triggers)


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:LOGGED_IDS])
    return shown + (f" and {len(ids) - LOGGED_IDS} more" if len(ids) > LOGGED_IDS else "")


class Base(tornado.web.RequestHandler):
    console: Console

    def initialize(self, console: Console) -> None:
        self.console = console

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
            return TOKEN_OPERATOR if creds.bearer(header) else None
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        return self.console.sessions.operator(raw.decode()) if raw else None

    def check_xsrf_cookie(self) -> None:
        """A script sending the token in its ``Authorization`` header needs no XSRF token: a
        browser never adds that header on its own, so no other site can make it."""
        if self.request.headers.get("Authorization") and self.current_user == TOKEN_OPERATOR:
            return
        super().check_xsrf_cookie()

    def prepare(self) -> None:
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
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, redis.RedisError | OperationalError):
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
        self.render("error.html", status=self.get_status(), message=message)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
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
        raise tornado.web.HTTPError(404, reason="No such page")


class Health(tornado.web.RequestHandler):
    """For a container healthcheck: the console answers (it reads nothing)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write("ok\n")


class Login(Base):
    session_action = True

    def get(self) -> None:
        target = views.local_path(self.get_argument("next", None))
        if not self.console.credentials.required or self.current_user:
            self.redirect(target)
            return
        self.render("login.html", error=None, next=target)

    async def post(self) -> None:
        user = self.get_body_argument("user", "").strip()
        password = self.get_body_argument("password", "")
        target = views.local_path(self.get_body_argument("next", None))
        name = self.console.credentials.login(user, password)
        if name is None:
            # Only a name known to be a user name is logged: a password typed into the wrong
            # field must not end up in the log.
            known = self.console.credentials.user
            who = f"as {user!r}" if known is not None and user == known else "(unknown user)"
            log.warning("console: failed login %s from %s", who, self.request.remote_ip)
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            self.set_status(403)
            self.render("login.html", error="Wrong user name or password.", next=target)
            return
        self.set_signed_cookie(
            SESSION_COOKIE,
            self.console.sessions.open(name),
            expires_days=None,
            httponly=True,
            samesite="Strict",
            secure=self.request.protocol == "https",
        )
        log.info("console: %s (%s) logged in", name, self.request.remote_ip)
        self.redirect(target)


class Logout(Base):
    session_action = True

    @tornado.web.authenticated
    def post(self) -> None:
        self.audit("logged out")
        raw = self.get_signed_cookie(SESSION_COOKIE, max_age_days=SESSION_DAYS)
        if raw:
            self.console.sessions.close(raw.decode())
        self.clear_cookie(SESSION_COOKIE)
        self.redirect("/login" if self.console.credentials.required else "/subscribers")


class Home(Base):
    @tornado.web.authenticated
    def get(self) -> None:
        self.redirect("/subscribers")


class Subscribers(Base):
    @tornado.web.authenticated
    def get(self) -> None:
        self.render("subscribers.html", rows=self.ops.health())


class Subscriber(Base):
    @tornado.web.authenticated
    def get(self, subscriber_id: str) -> None:
        health = self.ops.subscriber_health(subscriber_id)
        if health is None:
            raise tornado.web.HTTPError(404, reason=f"No subscriber {subscriber_id!r}")
        self.render(
            "subscriber.html",
            sub=health,
            attempts=self.ops.recent_attempts(subscriber_id),
        )


class SubscriberAction(Base):
    @tornado.web.authenticated
    def post(self, subscriber_id: str, action: str) -> None:
        if action == "disable":
            reason = self.get_body_argument("reason", "").strip()[:REASON_MAX]
            reason = reason or DISABLED_BY_OPERATOR
            self.ops.disable(subscriber_id, reason)
            self.audit("disabled subscriber %s (%s)", subscriber_id, reason)
            self.flash(f"{subscriber_id}: disabled ({reason})")
        else:
            self.ops.enable(subscriber_id)
            self.audit("enabled subscriber %s", subscriber_id)
            self.flash(f"{subscriber_id}: enabled")
        self.redirect(self.back("/subscribers"))


def _filters(handler: Base, get: Callable[[str, str], str]) -> tuple[dict[str, str], str | None]:
    """The dead-letter filter of a request (subscriber, event type, since), and a problem
    with it, if any."""
    chosen = {name: get(name, "").strip() for name in ("subscriber", "event", "since")}
    problem = None
    if chosen["since"]:
        try:
            parse_since(chosen["since"])
        except ValueError as exc:
            problem = f"since: {exc}"
    return chosen, problem


def _matching(ops: Operations, chosen: dict[str, str]) -> list[str]:
    since = parse_since(chosen["since"]) if chosen["since"] else None
    letters = ops.dead_letters(
        subscriber=chosen["subscriber"] or None,
        event_type=chosen["event"] or None,
        since_ms=since,
    )
    return [letter.delivery_id for letter in letters]


def _listing(chosen: dict[str, str]) -> str:
    kept = {k: v for k, v in chosen.items() if v}
    return "/dead-letters" + (f"?{urlencode(kept)}" if kept else "")


class DeadLetters(Base):
    @tornado.web.authenticated
    def get(self) -> None:
        chosen, problem = _filters(self, self.get_query_argument)
        letters = []
        if problem is None:
            since = parse_since(chosen["since"]) if chosen["since"] else None
            letters = self.ops.dead_letters(
                subscriber=chosen["subscriber"] or None,
                event_type=chosen["event"] or None,
                since_ms=since,
            )
            letters.reverse()  # newest first
        self.render(
            "dead_letters.html",
            letters=letters[:DEAD_LETTERS_SHOWN],
            total=len(letters),
            chosen=chosen,
            problem=problem,
            subscribers=self.ops.subscriber_ids(),
            listing=_listing(chosen),
        )


class _Selection(Base):
    """What a dead-letter action applies to: the ids ticked, or every one the filter matches."""

    def selection(self) -> tuple[list[str], dict[str, str]]:
        chosen, problem = _filters(self, self.get_body_argument)
        if problem:
            raise tornado.web.HTTPError(400, reason=problem)
        if self.get_body_argument("scope", "selected") == "matching":
            return _matching(self.ops, chosen), chosen
        return list(dict.fromkeys(self.get_body_arguments("id"))), chosen

    def chosen_ids(self, verb: str) -> tuple[list[str], dict[str, str], str] | None:
        """The ids to act on, the filters and the page to go back to; None (with a message and
        the redirect back made) when nothing is selected."""
        ids, chosen = self.selection()
        back = self.back(_listing(chosen))
        if not ids:
            self.flash(f"Nothing to {verb}: no dead letter selected.")
            self.redirect(back)
            return None
        return ids, chosen, back


class Replay(_Selection):
    @tornado.web.authenticated
    def post(self) -> None:
        picked = self.chosen_ids("replay")
        if picked is None:
            return
        ids, _, back = picked
        try:
            done = self.ops.replay(ids, self.console.send)
        except SubscribersDisabledError as exc:
            self.audit("was refused a replay: %s", exc)
            self.flash(f"Nothing replayed: {exc}; enable it first.")
            self.redirect(back)
            return
        self.audit("replayed %d dead letter(s): %s", len(done.replayed), _ids(done.replayed))
        message = f"Replayed {len(done.replayed)} dead letter(s)."
        if done.missing:
            message += f" Not found (already replayed or purged): {len(done.missing)}."
        self.flash(message)
        self.redirect(back)


class Purge(_Selection):
    @tornado.web.authenticated
    def post(self) -> None:
        picked = self.chosen_ids("purge")
        if picked is None:
            return
        ids, chosen, back = picked
        if self.get_body_argument("confirm", "") != "yes":
            # The confirmation names exactly these; purging then takes these and no others.
            self.render("purge_confirm.html", ids=ids, chosen=chosen, back=back)
            return
        purged = self.ops.purge(ids)
        self.audit("purged %d dead letter(s): %s", purged, _ids(ids))
        self.flash(f"Purged {purged} dead letter(s).")
        self.redirect(back)


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


class DeadLetter(Base):
    @tornado.web.authenticated
    def get(self, delivery_id: str) -> None:
        letter = self.ops.dead_letter(delivery_id)
        if letter is None:
            raise tornado.web.HTTPError(
                404, reason=f"No dead letter {delivery_id!r} (replayed, purged or expired)"
            )
        body = None
        if self.get_query_argument("body", "") == "1":
            self.audit("opened the body of dead letter %s", delivery_id)
            body = _pretty(str(letter.data.get("body", "")))
        self.render(
            "dead_letter.html",
            letter=letter,
            attempts=self.ops.attempts(delivery_id),
            body=body,
        )


class Lookup(Base):
    @tornado.web.authenticated
    def get(self) -> None:
        query = self.get_query_argument("q", "").strip()
        chosen_kind = self.get_query_argument("kind", "auto")
        kind = views.lookup_kind(query, chosen_kind)
        events = []
        if query:
            if kind == "delivery":
                events = self.ops.lookup_delivery(query)
            elif kind == "event":
                events = self.ops.lookup_event(query)
            else:
                events = self.ops.lookup_user(query)
        self.render(
            "lookup.html",
            query=query,
            kind=kind,
            chosen_kind=chosen_kind if chosen_kind in views.LOOKUP_KINDS else "auto",
            events=events,
        )


class EventBody(Base):
    @tornado.web.authenticated
    def get(self, event_id: str) -> None:
        body = self.ops.event_body(event_id)
        if body is None:
            raise tornado.web.HTTPError(404, reason=f"No body kept for event {event_id!r}")
        self.audit("opened the body of event %s", event_id)
        self.render("event_body.html", event_id=event_id, body=_pretty(body))


def routes(console: Console) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    shared = {"console": console}
    return [
        (r"/healthz", Health, {}),
        (r"/", Home, shared),
        (r"/login", Login, shared),
        (r"/logout", Logout, shared),
        (r"/subscribers", Subscribers, shared),
        (r"/subscribers/([^/]+)", Subscriber, shared),
        (r"/subscribers/([^/]+)/(enable|disable)", SubscriberAction, shared),
        (r"/dead-letters", DeadLetters, shared),
        (r"/dead-letters/replay", Replay, shared),
        (r"/dead-letters/purge", Purge, shared),
        (r"/dead-letters/([^/]+)", DeadLetter, shared),
        (r"/lookup", Lookup, shared),
        (r"/events/([^/]+)/body", EventBody, shared),
    ]
