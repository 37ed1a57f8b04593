"""The dead-letter pages: the filtered list, one dead letter with its attempts (and, on
request, its body), and the replay and purge actions on a selection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import tornado.web

from reseller_webhooks.worker.console import views
from reseller_webhooks.worker.console.handlers import Base
from reseller_webhooks.worker.errors import SubscribersDisabledError
from reseller_webhooks.worker.ops.actions import Operations, parse_since

#: Most dead letters one page lists (the actions on "all matching" take every one).
DEAD_LETTERS_SHOWN = 500
#: Most delivery ids one log line names.
LOGGED_IDS = 20


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:LOGGED_IDS])
    return shown + (f" and {len(ids) - LOGGED_IDS} more" if len(ids) > LOGGED_IDS else "")


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
