"""Logging in and out of the console (both allowed in read-only mode).

Failed logins are throttled per client address and per user name (``throttle``); a browser
that logged in as a user before carries a signed cookie that exempts it from that user's lock.
"""

from __future__ import annotations

import math

import tornado.web

from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.handlers import SESSION_COOKIE, SESSION_DAYS, Base, log
from reseller_webhooks.worker.console.throttle import Subject
from reseller_webhooks.worker.ops import outage

#: Signed: the user this browser logged in as before (not a credential: it logs no one in).
DEVICE_COOKIE = "rw_console_device"
DEVICE_DAYS = 30


class Login(Base):
    session_action = True

    def get(self) -> None:
        target = views.local_path(self.get_argument("next", None))
        if not self.console.credentials.required or self.current_user:
            self.redirect(target)
            return
        self.render("login.html", error=None, next=target)

    def subjects(self, user: str) -> list[Subject]:
        """What this try counts against: the client's address, and the user name unless this
        browser logged in as that user before."""
        subjects: list[Subject] = [("addr", str(self.request.remote_ip))]
        known = self.get_signed_cookie(DEVICE_COOKIE, max_age_days=DEVICE_DAYS)
        if known is None or known.decode() != user:
            subjects.append(("user", user))
        return subjects

    def post(self) -> None:
        user = self.get_body_argument("user", "").strip()
        password = self.get_body_argument("password", "")
        target = views.local_path(self.get_body_argument("next", None))
        subjects = self.subjects(user)
        wait = self.console.throttle.wait_s(subjects)
        if wait > 0:
            log.warning("console: login refused (locked) from %s", self.request.remote_ip)
            self.set_status(429)
            self.set_header("Retry-After", str(math.ceil(wait)))
            self.render(
                "login.html",
                error=f"Too many failed logins; try again in {math.ceil(wait)} s.",
                next=target,
            )
            return
        name = self.console.credentials.login(user, password)
        if name is None:
            # Only a name known to be a user name is logged: a password typed into the wrong
            # field must not end up in the log.
            known = self.console.credentials.user
            who = f"as {user!r}" if known is not None and user == known else "(unknown user)"
            log.warning("console: failed login %s from %s", who, self.request.remote_ip)
            self.console.throttle.failed(subjects)
            self.set_status(403)
            self.render("login.html", error="Wrong user name or password.", next=target)
            return
        self.console.throttle.forget(subjects[0])
        session = self.console.sessions.open(name)  # Redis refusing writes: a 503 page
        outage.REDIS.accepted()
        self.set_signed_cookie(
            SESSION_COOKIE, session, expires_days=None, httponly=True, samesite="Strict"
        )
        self.set_signed_cookie(
            DEVICE_COOKIE, user, expires_days=DEVICE_DAYS, httponly=True, samesite="Strict"
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
