"""An endpoint down for an hour while events are published, on a scaled schedule.

``python -m bench.outage [--events 1000] [--outage-s 3600] [--scale 0.01] [--baseline REV]``

One worker, one subscriber, a loopback receiver that answers 503 for the outage (``outage-s``
times ``scale`` of wall time) and 200 after. Events are published one per call, evenly over
the outage, each about a user of its own. Reports the attempts that reached the endpoint while
it was down, and the time from its return until every event was delivered (and that time
unscaled). With ``--baseline REV`` the same runs first with the worker of git revision REV
(``producers/`` and ``worker/`` extracted and put first on its ``PYTHONPATH``), on a Redis of
its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import wait_for
from bench.redis_cpu import extract
from reseller_webhooks.producers.publisher import Publisher
from reseller_webhooks.producers.settings import ProducerSettings
from reseller_webhooks.worker.devserver.receiver import Received, Receiver, Reply
from reseller_webhooks.worker.devserver.redis_server import RedisServer
from reseller_webhooks.worker.devserver.samples import sample_user

SECRET = "whsec_" + "YmVuY2gtb3V0YWdlLXNlY3JldC1vZi0zMi1ieXRlcyE="


class Endpoint:
    """Down (503) until ``up`` is set; counts the requests of each phase."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.while_down = 0
        self.delivered: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, item: Received) -> Reply:
        with self.lock:
            if not self.up.is_set():
                self.while_down += 1
                return Reply(503)
            self.delivered.add(item.headers.get("webhook-id", ""))
            return Reply(200)


def start_worker(directory: Path, redis_url: str, url: str, scale: float, code: Path | None) -> Any:
    config = directory / "subscribers.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "allow_private_networks": True,
                "subscribers": [
                    {"id": "s", "url": url, "events": ["reseller.user.*"], "secret_env": "S_SECRET"}
                ],
            }
        )
    )
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WEBHOOKS_SUBSCRIBERS": str(config),
        "WEBHOOKS_SCHEDULE_SCALE": str(scale),
        "WEBHOOKS_METRICS_PORT": "0",
        "S_SECRET": SECRET,
    }
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    log_path = directory / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "reseller_webhooks.worker", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    wait_for(lambda: " ready." in log_path.read_text(errors="replace"), 60, "worker ready", 0.05)
    return worker


def run_side(
    directory: Path, code: Path | None, events: int, down_s: float, scale: float
) -> dict[str, Any]:
    directory.mkdir(parents=True)
    endpoint = Endpoint()
    server = RedisServer(directory / "redis").start()
    worker = None
    try:
        with Receiver(respond=endpoint) as receiver:
            worker = start_worker(directory, server.url, f"{receiver.url}/s", scale, code)
            with Publisher(ProducerSettings(redis_url=server.url)) as publisher:
                started = time.monotonic()
                ids = []
                for n in range(events):  # evenly over the outage
                    wait = started + n * down_s / events - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    ids.append(publisher.user_created({**sample_user(), "id": f"usr_{n}"}))
            time.sleep(max(0.0, started + down_s - time.monotonic()))  # the outage's end
            with endpoint.lock:
                endpoint.up.set()
                back, attempts_down = time.monotonic(), endpoint.while_down
            wait_for(lambda: endpoint.delivered >= set(ids), 1800, "every event delivered", 0.05)
            drained_s = time.monotonic() - back
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        server.stop()
    return {
        "events": events,
        "attempts_while_down": attempts_down,
        "drain_after_return_s": round(drained_s, 1),
        "drain_unscaled_h": round(drained_s / scale / 3600, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outage")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--outage-s", type=float, default=3600.0, help="unscaled")
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--baseline", help="a git revision to run first, for comparison")
    args = parser.parse_args()
    down_s = args.outage_s * args.scale
    result: dict[str, Any] = {
        "scale": args.scale,
        "outage_s": args.outage_s,
        "wall_outage_s": down_s,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.baseline:
            code = extract(args.baseline, root / "baseline-code")
            result["baseline"] = run_side(root / "baseline", code, args.events, down_s, args.scale)
            print(f"baseline {args.baseline}: {result['baseline']}", file=sys.stderr, flush=True)
        result["current"] = run_side(root / "current", None, args.events, down_s, args.scale)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
