"""Erasing one user's data from the Lookup page (``users forget`` on the command line).

The first POST shows what would go (counted, nothing changed); the second, with
``confirm=yes``, erases through the same ``Erasure`` as the command line. The log names the
operator and the counts, never the user's id or data. A POST like every action: XSRF token,
``Host``/``Origin`` guard, refused in read-only mode (``Base.prepare``).
"""

from __future__ import annotations

import tornado.web

from reseller_webhooks.worker.console.handlers import Base
from reseller_webhooks.worker.records.erasure import Erasure

#: The longest user id taken (ids are short; a page never echoes a huge one).
MAX_USER_ID = 200


class Forget(Base):
    @tornado.web.authenticated
    def post(self) -> None:
        user_id = self.get_body_argument("user", "").strip()
        if not user_id or len(user_id) > MAX_USER_ID:
            raise tornado.web.HTTPError(
                400, reason=f"user: the user's id, 1 to {MAX_USER_ID} characters"
            )
        erasure = Erasure(self.ops.store)
        subscribers = self.ops.subscriber_ids()
        if self.get_body_argument("confirm", "") != "yes":
            self.render(
                "forget_confirm.html",
                user_id=user_id,
                preview=erasure.preview(user_id, subscribers),
            )
            return
        done = erasure.forget(user_id, subscribers)
        self.audit(
            "erased a user's data: %d event(s), %d delivery(ies) cancelled, %d dead letter(s),"
            " %d attempt log(s) cleaned",
            done.events,
            done.cancelled,
            done.dead_letters,
            done.attempt_logs,
        )
        self.flash(
            f"Erased: {done.events} event body(ies), {done.cancelled} undelivered"
            f" delivery(ies) cancelled, {done.dead_letters} dead letter(s) deleted,"
            f" {done.attempt_logs} attempt log(s) cleaned."
        )
        self.redirect("/lookup")
