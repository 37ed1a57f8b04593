"""The console's addresses and the handler of each."""

from __future__ import annotations

from typing import Any

import tornado.web

from reseller_webhooks.worker.console.dead_letter_actions import JobPage, Purge, Replay
from reseller_webhooks.worker.console.dead_letters import DeadLetter, DeadLetters
from reseller_webhooks.worker.console.forget import Forget
from reseller_webhooks.worker.console.handlers import Console, Health
from reseller_webhooks.worker.console.jobs import JOB_ID
from reseller_webhooks.worker.console.login import Login, Logout
from reseller_webhooks.worker.console.lookup import EventBody, Lookup
from reseller_webhooks.worker.console.subscribers import (
    Home,
    Subscriber,
    SubscriberAction,
    Subscribers,
)


def routes(console: Console) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    shared = {"console": console}
    return [
        (r"/healthz", Health, shared),
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
        (rf"/jobs/({JOB_ID})", JobPage, shared),
        (r"/lookup", Lookup, shared),
        (r"/events/([^/]+)/body", EventBody, shared),
        (r"/users/forget", Forget, shared),
    ]
