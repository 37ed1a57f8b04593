"""The dead-letter pages: the filtered list (a page at a time, read from the indexes), one dead
letter with its attempts (and, on request, its body). The actions on them are in
``dead_letter_actions``."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import tornado.web

from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.handlers import Base
from reseller_webhooks.worker.ops.actions import Operations, parse_since
from reseller_webhooks.worker.records.deadletters import Filter

#: Dead letters one page lists; older ones are on the next page.
DEAD_LETTERS_SHOWN = 100
FILTER_FIELDS = ("subscriber", "event", "since")


def filters(get: Callable[[str, str], str]) -> tuple[dict[str, str], str | None]:
    """The dead-letter filter of a request (subscriber, event type, since), and a problem
    with it, if any."""
    chosen = {name: get(name, "").strip() for name in FILTER_FIELDS}
    problem = None
    if chosen["since"]:
        try:
            parse_since(chosen["since"])
        except ValueError as exc:
            problem = f"since: {exc}"
    return chosen, problem


def to_filter(ops: Operations, chosen: dict[str, str], until_ms: int | None = None) -> Filter:
    since = parse_since(chosen["since"]) if chosen["since"] else None
    return ops.dead_filter(
        subscriber=chosen["subscriber"],
        event_type=chosen["event"],
        since_ms=since,
        until_ms=until_ms,
    )


def listing(chosen: dict[str, str], offset: int = 0) -> str:
    kept = {k: v for k, v in chosen.items() if v}
    if offset:
        kept["from"] = str(offset)
    return "/dead-letters" + (f"?{urlencode(kept)}" if kept else "")


def describe(chosen: dict[str, str]) -> str:
    """The filter in words: ``subscriber acme-crm, event type x, since 2h``."""
    words = {"subscriber": "subscriber", "event": "event type", "since": "since"}
    parts = [f"{words[name]} {chosen[name]}" for name in FILTER_FIELDS if chosen.get(name)]
    return ", ".join(parts) or "no filter (every dead letter)"


def offset_of(raw: str) -> int:
    """The ``from`` of a listing: a place in the index, 0 when absent or not a number."""
    return int(raw) if raw.isdigit() and len(raw) < 10 else 0


class DeadLetters(Base):
    @tornado.web.authenticated
    def get(self) -> None:
        chosen, problem = filters(self.get_query_argument)
        offset = offset_of(self.get_query_argument("from", "0"))
        page, total = None, 0
        if problem is None:
            wanted = to_filter(self.ops, chosen)
            total = self.ops.dead_count(wanted)
            page = self.ops.dead_letter_page(wanted, offset=offset, size=DEAD_LETTERS_SHOWN)
        self.render(
            "dead_letters.html",
            letters=page.letters if page else [],
            total=total,
            offset=offset,
            older=listing(chosen, page.next_offset) if page and page.next_offset else None,
            newest=listing(chosen) if offset else None,
            chosen=chosen,
            problem=problem,
            subscribers=self.ops.subscriber_ids(),
            listing=listing(chosen, offset),
        )


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
            body = views.pretty_json(str(letter.data.get("body", "")))
        self.render(
            "dead_letter.html",
            letter=letter,
            attempts=self.ops.attempts(delivery_id),
            body=body,
        )
