"""Long console actions (replaying or purging thousands of dead letters) run beside the server,
not in it: one at a time on a worker thread, a chunk per Redis round trip, while the pages and
``/healthz`` keep answering. Its progress is kept here and copied by its thread to Redis (kept
a day), so that any console process behind the same address shows it on ``/jobs/ID``; the
server itself never waits on that copy.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, cast

import redis
from kombu.exceptions import OperationalError

from reseller_webhooks.producers.errors import UnavailableError
from reseller_webhooks.producers.wire import Keys
from reseller_webhooks.worker.errors import OperatorError
from reseller_webhooks.worker.ops.actions import Progress

log = logging.getLogger("reseller_webhooks.worker.console")

#: How long a job's record (and so its page) is kept.
JOB_TTL_S = 86400
#: What a job id looks like (it is in an address).
JOB_ID = r"[A-Za-z0-9_-]{16}"

#: The work: given a progress callback, does it all and returns how many it acted on.
Work = Callable[[Progress], int]


@dataclass(frozen=True)
class Job:
    job_id: str
    title: str  # e.g. "Replay dead letters of subscriber acme-crm"
    state: str  # waiting | running | done | failed
    total: int  # how many the index held when it was asked for
    seen: int
    done: int
    message: str

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed")


class Jobs:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="console-job")
        #: This process's jobs (a dict's item assignment is atomic: the threads share it).
        self._here: dict[str, Job] = {}
        self._stopping = threading.Event()

    def stop(self) -> None:
        """The console stops: a running job ends after its chunk, waiting ones do not start."""
        self._stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def start(self, title: str, total: int, work: Work, result: Callable[[int], str]) -> str:
        """Queue ``work``; returns the job's id. ``result`` turns its count into the closing
        message (and may log it)."""
        job_id = secrets.token_urlsafe(12)
        self._here[job_id] = Job(job_id, title, "waiting", total, 0, 0, "")
        self._executor.submit(self._run, job_id, work, result)
        return job_id

    def get(self, job_id: str) -> Job | None:
        """A job of this process, else as another one recorded it."""
        if job_id in self._here:
            return self._here[job_id]
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.console_job(job_id)))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return Job(
            job_id,
            fields.get("title", ""),
            fields.get("state", "failed"),
            int(fields.get("total", 0)),
            int(fields.get("seen", 0)),
            int(fields.get("done", 0)),
            fields.get("message", ""),
        )

    def _save(self, job_id: str, **fields: Any) -> None:
        """Update the job here, then its copy in Redis (on the job's thread)."""
        job = self._here[job_id] = replace(self._here[job_id], **fields)
        key = self.keys.console_job(job_id)
        pipe = self.redis.pipeline(transaction=True)
        for name in ("title", "state", "total", "seen", "done", "message"):
            pipe.hset(key, name, getattr(job, name))
        pipe.expire(key, JOB_TTL_S)
        pipe.execute()

    def _progress(self, job_id: str, seen: int, done: int) -> None:
        self._save(job_id, seen=seen, done=done)
        if self._stopping.is_set():
            raise OperatorError("stopped with the console: run it again for the rest")

    def _run(self, job_id: str, work: Work, result: Callable[[int], str]) -> None:
        try:
            self._save(job_id, state="running")
            count = work(lambda seen, done: self._progress(job_id, seen, done))
            self._save(job_id, state="done", done=count, message=result(count))
        except (redis.RedisError, OperationalError) as exc:
            self._failed(job_id, f"{UnavailableError.from_exception(exc)}; what is done stays done")
        except OperatorError as exc:
            self._failed(job_id, str(exc))
        except Exception:
            log.exception("console: job %s failed", job_id)
            self._failed(job_id, "failed: see the console's log")

    def _failed(self, job_id: str, message: str) -> None:
        log.warning("console: job %s: %s", job_id, message)
        self._here[job_id] = replace(self._here[job_id], state="failed", message=message)
        try:
            self._save(job_id, state="failed", message=message)
        except redis.RedisError:
            log.warning("console: job %s: its record could not be written", job_id)
