"""Looking a delivery up by user, event or delivery id, and an event's body."""

from __future__ import annotations

import tornado.web

from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.handlers import Base


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
        self.render("event_body.html", event_id=event_id, body=views.pretty_json(body))
