"""The Celery tasks: thin triggers over ``delivery.deliverer``. Arguments are ids only, never data.

``webhooks.dispatch()`` drains the pending events into deliveries; ``webhooks.deliver(subscriber,
slot)`` attempts one subscriber's ready deliveries while its slot is live. Both end with a result
Flower shows: how many events, or which subscriber and how many attempts of each outcome.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator, Sequence
from typing import Any

from celery.signals import task_failure

from reseller_webhooks.producers.wire import DELIVER_TASK, DISPATCH_TASK, PUBLISH_TASK
from reseller_webhooks.worker.delivery.deliverer import TIME_SLICE_S
from reseller_webhooks.worker.delivery.runtime import Runtime
from reseller_webhooks.worker.delivery.wake import DISPATCH
from reseller_webhooks.worker.ops import outage
from reseller_webhooks.worker.queue.app import app
from reseller_webhooks.worker.queue.context import runtime_of
from reseller_webhooks.worker.queue.envelope import arguments_shape
from reseller_webhooks.worker.queue.triggers import send_deliver, send_dispatch
from reseller_webhooks.worker.records.shapes import Trigger

log = logging.getLogger(__name__)

_SUBSCRIBER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_TOKEN = re.compile(r"^[0-9]{1,20}$")


def runtime() -> Runtime:
    return runtime_of(app)


def _send(rt: Runtime) -> Any:
    def send(triggers: Sequence[Trigger]) -> None:
        send_deliver(app, rt.keys, triggers)

    return send


@contextlib.contextmanager
def _outage(doing: str, result: dict[str, Any]) -> Iterator[None]:
    """A Redis that still refuses writes after the waits inside ends the task quietly (reported
    once per outage by ``ops.outage``): what it left is in the records, and the scheduler takes
    it up again once Redis accepts writes (a lapsed slot or dispatch trigger is re-armed)."""
    try:
        yield
    except Exception as exc:  # a refusal, or what kombu raised because of one
        if not outage.REDIS.refused(exc, doing):
            raise
        result["refused"] = outage.REDIS.refusing or "refused"


@app.task(name=DISPATCH_TASK)
def dispatch() -> dict[str, Any]:
    """Fan pending events out to their subscribers in batches and arm their deliver triggers.

    Once the pending list is empty the trigger stays armed for a few short polls: at moderate
    rates the events that follow are drained by this task within a poll, instead of each
    arming a message of its own. The last poll disarms it in the same step that sees the list
    empty, so an event recorded just after still arms a new trigger.
    """
    rt = runtime()
    if rt.guard.check():
        return {"refused": "store reset not accepted"}  # the events stay pending
    result: dict[str, Any] = {}
    with _outage("fanning out events", result):
        result.update(_dispatch(rt))
    return result


def _dispatch(rt: Runtime) -> dict[str, Any]:
    send = _send(rt)
    started = time.monotonic()
    events = missing = 0
    with rt.deliverer.wakeups.linger(DISPATCH) as linger:
        while True:
            keep = linger.keep()
            drained = rt.deliverer.drain(keep_armed=keep)
            send(drained.triggers)
            events += drained.events
            missing += drained.missing
            if drained.events:
                linger.worked()
            if not drained.more:
                if not keep:
                    break  # disarmed
                linger.wait()  # until a publish wakes it, or the linger ends
            if time.monotonic() - started > TIME_SLICE_S:
                send_dispatch(app, rt.keys)  # still armed: carry on behind the queued triggers
                break
    return {"events": events, **({"expired": missing} if missing else {})}


@app.task(name=DELIVER_TASK, bind=True)
def deliver(self: Any, subscriber_id: Any, token: Any) -> dict[str, Any]:
    """Attempt one subscriber's ready deliveries while this trigger's slot is live."""
    rt = runtime()
    if not (
        isinstance(subscriber_id, str)
        and _SUBSCRIBER_ID.match(subscriber_id)
        and isinstance(token, str)
        and _TOKEN.match(token)
    ):
        rt.store.bad_message(
            DELIVER_TASK,
            "arguments are not (subscriber id, slot token)",
            arguments_shape([subscriber_id, token], {}),
        )
        return {"malformed": 1}
    if rt.guard.check():
        rt.store.release(subscriber_id, token)  # its deliveries stay as Redis has them
        return {"refused": "store reset not accepted"}
    result: dict[str, Any] = {"subscriber": subscriber_id}
    with _outage("delivering", result):
        served = rt.deliverer.serve(subscriber_id, token, _send(rt))
        result.update(served.counts)
        if served.resend:
            queue = (self.request.delivery_info or {}).get("routing_key") or rt.keys.queue
            self.apply_async(args=[subscriber_id, token], queue=queue)
    return result


@task_failure.connect
def _failed(sender: Any = None, exception: BaseException | None = None, **kw: Any) -> None:
    """A task that raised (e.g. wrong arguments) had its message acknowledged: keep a record.

    The durable delivery records are untouched, so the scheduler re-triggers whatever the
    failed task left unfinished.
    """
    if exception is not None and outage.REDIS.refused(exception, "recording a failed task"):
        return  # nothing can be recorded now; the outage is logged
    name = getattr(sender, "name", "?")
    reason = f"task raised {type(exception).__name__}: {exception}"
    if name == PUBLISH_TASK:  # its arguments are personal data
        runtime().store.bad_message(name, f"task raised {type(exception).__name__}", {})
        return
    runtime().store.bad_message(name, reason, arguments_shape(kw.get("args"), kw.get("kwargs")))
