"""Redis CPU per delivery of the records' scripts: drain, claim and finish, nothing else.

``python -m bench.redis_cpu [--rounds 41] [--deliveries 1000] [--baseline REV]``

Each side is a driver process with a private redis-server of its own. A round publishes events
(every other delivery to a subscriber ordered per user; each event about a user of its own),
resets ``INFO commandstats``, then drives ``records.store.Store`` as a worker does (drain; claim;
finish and claim again in one round trip; every attempt delivered) and reports, per delivery,
the ``usec`` of EVALSHA and EVAL (wall time inside the scripts), the server's main-thread CPU
(user + sys, which other processes holding the CPU inflate less) and the commands the scripts
ran (no noise at all).

With ``--baseline REV`` a second driver runs the ``producers/`` and ``worker/`` of git revision
REV (extracted to a temporary directory put first on its ``PYTHONPATH``). The drivers take turns
round by round, alternating which goes first, so both sides of a round see about the same
machine load; it reports both medians, their ratio and the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

#: Each event goes to both: one subscriber without ordering, one ordered per user.
ROUTES_SPEC = {"plain": (False, False), "ordered": (True, False)}
#: As the worker's defaults: ``deliver_chunk`` and a subscriber's ``max_in_flight``.
MOST, BOUND = 50, 4
LEASE_MS = 60_000
SCRIPT_CMDS = ("cmdstat_evalsha", "cmdstat_eval")

#: What each round reports, per delivery.
METRICS = {
    "us_per_delivery": "script time (INFO commandstats usec of EVALSHA and EVAL), us",
    "cpu_us_per_delivery": "Redis main-thread CPU (INFO cpu, user + sys), us",
    "commands_per_delivery": "commands the scripts ran",
}


class Driver:
    """Runs in a driver process, against whichever ``reseller_webhooks`` it imports."""

    def __init__(self, url: str) -> None:
        import redis

        from reseller_webhooks.producers.publisher import Publisher
        from reseller_webhooks.producers.settings import ProducerSettings
        from reseller_webhooks.producers.wire import Keys
        from reseller_webhooks.worker.devserver.samples import sample_user
        from reseller_webhooks.worker.records import store as records

        self.client = redis.Redis.from_url(url)
        self.publisher = Publisher(ProducerSettings(redis_url=url))
        self.sample_user = sample_user
        self.records = records
        subs = [
            records.Route(s, ordered, coalesce) for s, (ordered, coalesce) in ROUTES_SPEC.items()
        ]
        self.routes = {"reseller.user.created": subs, "reseller.user.updated": subs}
        self.store = records.Store(
            self.client, Keys(), record_retention_s=3600, dead_letter_retention_s=3600,
            attempt_log_size=50,
        )  # fmt: skip

    def round(self, deliveries: int) -> dict[str, Any]:
        from bench.harness import flush_keeping_identity

        flush_keeping_identity(self.client)
        self.publish(deliveries // len(ROUTES_SPEC))
        self.client.config_resetstat()
        cpu_s = self.main_thread_cpu_s()
        delivered = self.deliver_all()
        cpu_s = self.main_thread_cpu_s() - cpu_s
        stats = self.client.info("commandstats")
        usec = sum(int(stats.get(c, {}).get("usec", 0)) for c in SCRIPT_CMDS)
        calls = sum(int(stats.get(c, {}).get("calls", 0)) for c in SCRIPT_CMDS)
        inner = sum(int(v["calls"]) for k, v in stats.items() if k not in SCRIPT_CMDS)
        n = max(delivered, 1)
        return {
            "deliveries": delivered,
            "script_calls": calls,
            "us_per_delivery": usec / n,
            "cpu_us_per_delivery": cpu_s * 1e6 / n,
            "commands_per_delivery": inner / n,
            "store": self.records.__file__,
        }

    def publish(self, events: int) -> None:
        users = [{**self.sample_user(), "id": f"usr_{n}"} for n in range(events)]
        for start in range(0, events, 500):
            chunk = users[start : start + 500]
            self.publisher.publish_batch(
                [{"event": "reseller.user.created", "data": u} for u in chunk]
            )

    def main_thread_cpu_s(self) -> float:
        from bench.harness import redis_main_thread_cpu_s

        return redis_main_thread_cpu_s(self.client)

    def deliver_all(self) -> int:
        """Drain everything pending, then serve every armed slot until it is released."""
        triggers = []
        while True:
            drained = self.store.drain(self.routes, batch=500, now_iso="2026-01-01T00:00:00.000Z")
            triggers += drained.triggers
            if not drained.more:
                break
        delivered = 0
        while triggers:
            trigger = triggers.pop()
            done: list[Any] = []
            while True:
                batch = self.store.claim(
                    trigger.subscriber_id, trigger.token, most=MOST, lease_ms=LEASE_MS,
                    bound=BOUND, finished=done,
                )  # fmt: skip
                delivered += len(done)
                if batch is None:
                    break
                triggers += batch.more
                finish = self.records.Finish("delivered", {"outcome": "delivered"})
                done = [(c, finish) for c in batch.claims]
        return delivered


def serve(url: str) -> None:
    """The driver process: one JSON line per round asked for on stdin (a delivery count)."""
    driver = Driver(url)
    for line in sys.stdin:
        print(json.dumps(driver.round(int(line))), flush=True)


def extract(rev: str, into: Path) -> Path:
    """``producers/`` and ``worker/`` of ``rev`` laid out as the installed namespace."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", rev, "producers", "worker"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(into / "reseller_webhooks", filter="data")
    return into


class Side:
    """One driver process (``python -m MODULE --serve URL``) and its redis-server."""

    def __init__(
        self,
        directory: Path,
        pythonpath: Path | None,
        stack: ExitStack,
        module: str = "bench.redis_cpu",
    ) -> None:
        from reseller_webhooks.worker.devserver.redis_server import RedisServer

        server = stack.enter_context(RedisServer(directory))
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(pythonpath), env.get("PYTHONPATH")])
            )
        self.process = stack.enter_context(
            subprocess.Popen(
                [sys.executable, "-m", module, "--serve", server.url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            )
        )  # fmt: skip
        stack.callback(self.process.stdin.close)  # type: ignore[union-attr]

    def ask(self, size: int) -> dict[str, Any]:
        """One round of ``size`` in the driver: its JSON answer."""
        stdin: IO[str] = self.process.stdin  # type: ignore[assignment]
        stdout: IO[str] = self.process.stdout  # type: ignore[assignment]
        stdin.write(f"{size}\n")
        stdin.flush()
        return dict(json.loads(stdout.readline()))


def interleave(
    sides: dict[str, Side],
    rounds: int,
    size: int,
    metrics: Iterable[str],
    line: Callable[[dict[str, Any]], str],
) -> dict[str, dict[str, list[float]]]:
    """``rounds`` rounds of ``size`` on every side, taking turns (the order reversed every other
    round), after one warm-up round each; each round's ``metrics``, and ``line`` of it on stderr."""
    for side in sides.values():
        side.ask(size)  # warm-up: scripts loaded, first-use costs paid
    figures: dict[str, dict[str, list[float]]] = {s: {m: [] for m in metrics} for s in sides}
    order = list(sides)
    for n in range(rounds):
        for name in order if n % 2 == 0 else order[::-1]:
            result = sides[name].ask(size)
            for metric, values in figures[name].items():
                values.append(result[metric])
            print(f"round {n + 1} {name}: {line(result)}", file=sys.stderr, flush=True)
    return figures


def measure(
    sides: dict[str, Side], rounds: int, deliveries: int
) -> dict[str, dict[str, list[float]]]:
    def line(result: dict[str, Any]) -> str:
        assert result["deliveries"] == deliveries, result
        return (
            f"{result['us_per_delivery']:.1f} us in scripts, "
            f"{result['cpu_us_per_delivery']:.1f} us of CPU, "
            f"{result['commands_per_delivery']:.2f} commands per delivery "
            f"({result['script_calls']} script calls; {result['store']})"
        )

    return interleave(sides, rounds, deliveries, METRICS, line)


def report(figures: dict[str, dict[str, list[float]]], metric: str) -> None:
    for side, values in figures.items():
        print(f"  {side}: median {statistics.median(values[metric]):.2f}")
    if "baseline" in figures:
        now, then = figures["current"][metric], figures["baseline"][metric]
        ratio = statistics.median(now) / statistics.median(then)
        pairs = [c / b for c, b in zip(now, then, strict=True) if b]
        if not pairs:
            return
        print(
            f"  current / baseline: {ratio:.3f} (medians); each round's ratio: median "
            f"{statistics.median(pairs):.3f}, {min(pairs):.3f} to {max(pairs):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_cpu")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--baseline", help="a git revision to compare with, interleaved")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        sides = {"current": Side(root / "current", None, stack)}
        if args.baseline:
            code = extract(args.baseline, root / "baseline-code")
            sides = {"baseline": Side(root / "baseline", code, stack), **sides}
        figures = measure(sides, args.rounds, args.deliveries)
    print(f"{args.rounds} rounds of {args.deliveries} deliveries per side, per delivery:")
    for metric, label in METRICS.items():
        print(f"{label}:")
        report(figures, metric)


if __name__ == "__main__":
    main()
