"""Logging in and out of the console (both allowed in read-only mode)."""

from __future__ import annotations

import asyncio

import tornado.web

from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.handlers import SESSION_COOKIE, SESSION_DAYS, Base, log
from reseller_webhooks.worker.ops import outage

#: A failed login answers this much later (slows guessing without blocking other requests).
FAILED_LOGIN_DELAY_S = 0.5


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
        session = self.console.sessions.open(name)  # Redis refusing writes: a 503 page
        outage.REDIS.accepted()
        self.set_signed_cookie(
            SESSION_COOKIE,
            session,
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
