"""Replaying and purging dead letters from the console.

The ids ticked on a page (at most a page of them) are acted on at once. "All matching" may be
thousands: the console reads only their count, then hands the work to ``jobs`` (off the IO
loop, a chunk at a time) and shows its progress on ``/jobs/ID``. Both take what died until the
moment they were asked (the purge: until its confirmation page was shown), nothing that died
later.
"""

from __future__ import annotations

from collections.abc import Sequence

import tornado.web

from reseller_webhooks.worker.console.dead_letters import describe, filters, listing, to_filter
from reseller_webhooks.worker.console.handlers import Base, log
from reseller_webhooks.worker.errors import SubscribersDisabledError
from reseller_webhooks.worker.ops.actions import Progress
from reseller_webhooks.worker.records.deadletters import Filter

#: Most delivery ids one log line names.
LOGGED_IDS = 20


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:LOGGED_IDS])
    return shown + (f" and {len(ids) - LOGGED_IDS} more" if len(ids) > LOGGED_IDS else "")


class _Selection(Base):
    """What a dead-letter action applies to: the ids ticked, or every one the filter matches."""

    def chosen(self) -> dict[str, str]:
        chosen, problem = filters(self.get_body_argument)
        if problem:
            raise tornado.web.HTTPError(400, reason=problem)
        return chosen

    @property
    def matching(self) -> bool:
        return self.get_body_argument("scope", "selected") == "matching"

    def ticked(self, verb: str, back: str) -> list[str] | None:
        """The ids ticked; None (with a message and the redirect back made) when none is."""
        ids = list(dict.fromkeys(self.get_body_arguments("id")))
        if not ids:
            self.flash(f"Nothing to {verb}: no dead letter selected.")
            self.redirect(back)
            return None
        return ids

    def start(self, verb: str, chosen: dict[str, str], wanted: Filter, total: int) -> None:
        """Hand "all matching" to a job and go to its page."""
        operator, address, what = self.current_user, self.request.remote_ip, describe(chosen)
        past = "replayed" if verb == "replay" else "purged"

        def work(progress: Progress) -> int:
            if verb == "replay":
                return self.ops.replay_matching(wanted, self.console.send, progress)
            return self.ops.purge_matching(wanted, progress)

        def result(count: int) -> str:
            log.info(
                "console: %s (%s) %s %d dead letter(s): %s", operator, address, past, count, what
            )
            return f"{past.capitalize()} {count} dead letter(s)."

        title = f"{verb.capitalize()} dead letters: {what}"
        job_id = self.console.jobs.start(title, total, work, result)
        self.audit("started to %s %d dead letter(s): %s (job %s)", verb, total, what, job_id)
        self.redirect(f"/jobs/{job_id}")


class Replay(_Selection):
    @tornado.web.authenticated
    def post(self) -> None:
        chosen = self.chosen()
        back = self.back(listing(chosen))
        try:
            if self.matching:
                wanted = to_filter(self.ops, chosen, until_ms=self.ops.server_ms())
                blocked = self.ops.blocked(wanted)
                if blocked:
                    raise SubscribersDisabledError(blocked)
                self.start("replay", chosen, wanted, self.ops.dead_count(wanted))
                return
            ids = self.ticked("replay", back)
            if ids is None:
                return
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
        chosen = self.chosen()
        back = self.back(listing(chosen))
        confirmed = self.get_body_argument("confirm", "") == "yes"
        if self.matching:
            self.purge_matching(chosen, back, confirmed)
            return
        ids = self.ticked("purge", back)
        if ids is None:
            return
        if not confirmed:
            # The confirmation names exactly these; purging then takes these and no others.
            self.render(
                "purge_confirm.html",
                ids=ids,
                count=len(ids),
                chosen=chosen,
                what=None,
                until=None,
                back=back,
            )
            return
        purged = self.ops.purge(ids)
        self.audit("purged %d dead letter(s): %s", purged, _ids(ids))
        self.flash(f"Purged {purged} dead letter(s).")
        self.redirect(back)

    def purge_matching(self, chosen: dict[str, str], back: str, confirmed: bool) -> None:
        """The confirmation names the filter and a count (and the moment it was shown, which
        bounds what the purge takes); the purge itself is a job."""
        if not confirmed:
            until = self.ops.server_ms()
            count = self.ops.dead_count(to_filter(self.ops, chosen, until_ms=until))
            self.render(
                "purge_confirm.html",
                ids=None,
                count=count,
                chosen=chosen,
                what=describe(chosen),
                until=until,
                back=back,
            )
            return
        until_raw = self.get_body_argument("until", "")
        if not until_raw.isdigit():
            raise tornado.web.HTTPError(400, reason="until: the time the purge was confirmed, ms")
        wanted = to_filter(self.ops, chosen, until_ms=int(until_raw))
        self.start("purge", chosen, wanted, self.ops.dead_count(wanted))


class JobPage(Base):
    """A long action's progress; the page reloads itself until it is finished."""

    @tornado.web.authenticated
    def get(self, job_id: str) -> None:
        job = self.console.jobs.get(job_id)
        if job is None:
            raise tornado.web.HTTPError(404, reason=f"No job {job_id!r} (finished over a day ago?)")
        self.render("job.html", job=job)
