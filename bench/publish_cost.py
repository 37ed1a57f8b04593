"""What one ``publish()`` call costs, with and without an idempotency key, this checkout against
another, side by side.

``python -m bench.publish_cost [--base DIR] [--rounds 9] [-n 1000]``

Each round runs one process per checkout (in alternating order) against one private Redis; a
process times ``n`` single publish calls in three ways: without a key, with a fresh key each, and
with a key already used for the same event (answered from the key, nothing recorded). The
dispatch trigger is kept armed, so no call sends a Celery message (the loaded path: one script
call each). ``--base`` names another checkout's root (its ``producers/`` and ``worker/`` folders
are imported in place of the installed ones); without it only this checkout is measured.
Prints, per checkout and way, the medians over the rounds of microseconds per call: wall
time, the publishing process's CPU, and Redis's time in the script (``INFO commandstats``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WAYS = ("no_key", "fresh_key", "same_key_again")


def _script_usec(client: Any) -> tuple[int, int]:
    """Calls and microseconds Redis has spent in script calls so far."""
    stats = client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


def measure(redis_url: str, n: int) -> dict[str, float]:
    """Per publish call, each way: wall and client CPU microseconds, and the microseconds Redis
    spent in the script (run in a child process). CPU figures hold up on a busy machine far
    better than wall time."""
    import redis

    from reseller_webhooks.producers.publisher import Publisher
    from reseller_webhooks.producers.settings import ProducerSettings
    from reseller_webhooks.worker.devserver.samples import sample_user

    client = redis.Redis.from_url(redis_url)
    users = [{**sample_user(), "id": f"usr_cost{i}"} for i in range(n)]
    costs: dict[str, float] = {}
    with Publisher(ProducerSettings(redis_url=redis_url)) as publisher:
        publisher.ping()
        for way in WAYS:
            client.flushall()
            client.set(publisher.keys.dispatch_armed, 1)
            keys = [None if way == "no_key" else f"cost-{i}" for i in range(n)]
            if way == "same_key_again":
                for user, key in zip(users, keys, strict=True):
                    publisher.publish("reseller.user.created", user, idempotency_key=key)
            client.config_resetstat()
            started, cpu = time.perf_counter(), time.process_time()
            for user, key in zip(users, keys, strict=True):
                publisher.publish("reseller.user.created", user, idempotency_key=key)
            costs[f"{way}_wall"] = (time.perf_counter() - started) / n * 1e6
            costs[f"{way}_cpu"] = (time.process_time() - cpu) / n * 1e6
            calls, usec = _script_usec(client)
            costs[f"{way}_redis"] = usec / max(1, calls)
    client.close()
    return costs


def _base_path(base: Path, into: Path) -> str:
    """A folder whose ``reseller_webhooks`` namespace holds ``base``'s code."""
    package = into / "reseller_webhooks"
    package.mkdir(parents=True)
    for name in ("producers", "worker"):
        (package / name).symlink_to((base / name).resolve())
    return str(into)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_cost", description=__doc__)
    parser.add_argument("--base", type=Path, help="another checkout's root, measured beside")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("-n", type=int, default=1000, help="publish calls per way and round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.n)))
        return
    from reseller_webhooks.worker.devserver.redis_server import RedisServer

    results: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"this": os.environ.get("PYTHONPATH", "")}
        if args.base:
            paths["base"] = _base_path(args.base, Path(tmp) / "base")
        server = RedisServer(Path(tmp) / "redis").start()
        try:
            for index in range(args.rounds):
                order = sorted(paths, reverse=bool(index % 2))
                for name in order:
                    env = {**os.environ, "PYTHONPATH": paths[name]}
                    command = [sys.executable, "-m", "bench.publish_cost", "--child", server.url]
                    out = subprocess.run(
                        [*command, "-n", str(args.n)],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    results[name].append(json.loads(out.stdout))
        finally:
            server.stop(kill=True)
    for name, rounds in results.items():
        if rounds:
            medians = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
            print(json.dumps({"checkout": name, "rounds": len(rounds), "us_per_call": medians}))


if __name__ == "__main__":
    main()
