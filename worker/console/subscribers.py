"""The subscriber pages: every subscriber's health, one subscriber's recent attempts, and
disabling or enabling it."""

from __future__ import annotations

import tornado.web

from reseller_webhooks.worker.console.handlers import Base
from reseller_webhooks.worker.records.store import DISABLED_BY_OPERATOR

#: Longest reason a disable may be given.
REASON_MAX = 200


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
        configured = self.ops.config().by_id.get(subscriber_id)
        self.render(
            "subscriber.html",
            sub=health,
            attempts=self.ops.recent_attempts(subscriber_id),
            url=configured.shown_url if configured else None,
            events=configured.events if configured else (),
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
