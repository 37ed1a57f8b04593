"""The Celery tasks: thin triggers over ``worker.delivery``. Arguments are ids only, never data."""

from __future__ import annotations

import gc
import logging
from typing import Any

from celery.signals import (
    task_failure,
    task_unknown,
    worker_init,
    worker_ready,
    worker_shutdown,
)

from producers.wire import DELIVER_TASK, DISPATCH_TASK
from worker.affinity import CoreClaim, pin_worker
from worker.app import app
from worker.delivery import chunks_by_subscriber
from worker.runtime import Runtime, get_runtime
from worker.scheduler import Scheduler
from worker.store import split_delivery_id

log = logging.getLogger(__name__)


def runtime() -> Runtime:
    return get_runtime(app.webhooks_settings)


def _ids(value: Any, prefix: str) -> list[str] | None:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v.startswith(prefix) and len(v) < 200 for v in value)
    ):
        return value
    return None


def _route(rt: Runtime, chunks: list[list[str]]) -> list[list[str]]:
    """Send chunks for failing subscribers to the retry queue; return the healthy ones.

    A subscriber whose last attempt failed may well hang until its timeout: its traffic is
    retry-class traffic until it answers again, so it never holds up first attempts.
    """
    failing = rt.deliverer.failing_subscribers()
    healthy = []
    for chunk in chunks:
        if split_delivery_id(chunk[0])[1] in failing:
            deliver.apply_async(args=[chunk], queue=rt.keys.retry_queue)
        else:
            healthy.append(chunk)
    return healthy


@app.task(name=DISPATCH_TASK)
def dispatch(event_ids: Any) -> dict[str, int]:
    """Fan events out to their subscribers, deliver one chunk here, trigger the rest."""
    rt = runtime()
    ids = _ids(event_ids, "msg_")
    if ids is None:
        rt.store.bad_message(DISPATCH_TASK, "arguments are not a list of event ids", event_ids)
        return {"malformed": 1}
    queued, counts = rt.deliverer.dispatch(ids)
    for chunk in _route(rt, chunks_by_subscriber(queued, rt.settings.deliver_chunk)):
        deliver.apply_async(args=[chunk], queue=rt.keys.queue)
    return {"queued": len(queued), **counts}


@app.task(name=DELIVER_TASK, bind=True)
def deliver(self: Any, delivery_ids: Any) -> dict[str, int]:
    """Attempt each named delivery this worker can claim (others are stale or owned elsewhere)."""
    rt = runtime()
    ids = _ids(delivery_ids, "msg_")
    if ids is None:
        rt.store.bad_message(DELIVER_TASK, "arguments are not a list of delivery ids", delivery_ids)
        return {"malformed": 1}
    on_first_attempt_queue = (self.request.delivery_info or {}).get("routing_key") == rt.keys.queue
    if on_first_attempt_queue and not _route(rt, [ids]):
        return {"deferred": len(ids)}
    return rt.deliverer.deliver(ids)


@task_unknown.connect
def _unknown_task(sender: Any = None, name: str = "", message: Any = None, **_: Any) -> None:
    """A message for a task this worker does not know: record it instead of losing it silently."""
    body = getattr(message, "body", None)
    runtime().store.bad_message(name or "?", "unknown task name", body)


@task_failure.connect
def _failed(sender: Any = None, exception: BaseException | None = None, **kw: Any) -> None:
    """A task that raised (e.g. wrong arguments) had its message acknowledged: keep a record.

    The durable delivery records are untouched, so the scheduler re-triggers whatever the
    failed task left unfinished.
    """
    name = getattr(sender, "name", "?")
    reason = f"task raised {type(exception).__name__}: {exception}"
    runtime().store.bad_message(name, reason, {"args": kw.get("args"), "kwargs": kw.get("kwargs")})


_scheduler_stop: list[Any] = []
_core_claims: list[CoreClaim] = []


@worker_init.connect
def _pin(sender: Any = None, **_: Any) -> None:
    """Before the pool starts: one core for this process (see worker.affinity)."""
    rt = runtime()
    claim = pin_worker(rt.store.redis, rt.keys, rt.settings.cpu_affinity)
    if claim is not None:
        _core_claims.append(claim)


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    """Build the runtime before the first task, and start the embedded scheduler."""
    rt = runtime()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise stall deliveries for tens of milliseconds.
    gc.freeze()
    if rt.settings.embedded_scheduler:
        _thread, stop = Scheduler(store=rt.store, celery=app, settings=rt.settings).start_thread()
        _scheduler_stop.append(stop)


@worker_shutdown.connect
def _stop(sender: Any = None, **_: Any) -> None:
    for stop in _scheduler_stop:
        stop.set()
    for claim in _core_claims:
        claim.release()
