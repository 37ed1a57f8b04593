"""What signing costs per delivery: HMAC-SHA256 (``v1``) against ed25519 (``v1a``), with one key
and with two (a rotation), over a typical event body.

``python -m bench.signing_cost [--rounds 15] [--calls 5000]``

Times ``Signer.headers`` (what the sender calls once per attempt) in one process, the schemes
taking turns round by round; reports the median CPU microseconds per call of each, and each
scheme's ratio to HMAC with as many keys, taken within each round.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time

from reseller_webhooks.producers.events import build_event
from reseller_webhooks.worker.devserver.samples import sample_user
from reseller_webhooks.worker.http.signing import Signer

WEBHOOK_ID = "msg_9Q3cYkq2h7Vb0xZ1mN4pR8sT"


def signers() -> dict[str, Signer]:
    hmac_keys = [secrets.token_bytes(32), secrets.token_bytes(32)]
    seeds = [secrets.token_bytes(32), secrets.token_bytes(32)]
    return {
        "hmac, 1 key": Signer(hmac_keys[:1]),
        "ed25519, 1 key": Signer(seeds[:1], "ed25519"),
        "hmac, 2 keys": Signer(hmac_keys),
        "ed25519, 2 keys": Signer(seeds, "ed25519"),
    }


def time_us(signer: Signer, body: bytes, calls: int) -> float:
    """CPU microseconds per call (process time: what another process holding the core while
    this one waits does not inflate)."""
    started = time.process_time()
    for n in range(calls):
        signer.headers(WEBHOOK_ID, 1795348522 + n, body)
    return (time.process_time() - started) * 1e6 / calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.signing_cost")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    body = build_event("reseller.user.updated", sample_user()).body()
    sides = signers()
    for signer in sides.values():
        time_us(signer, body, 100)  # warm-up
    figures: dict[str, list[float]] = {name: [] for name in sides}
    order = list(sides)
    for n in range(args.rounds):
        for name in order if n % 2 == 0 else order[::-1]:
            figures[name].append(time_us(sides[name], body, args.calls))
    result = {}
    for name, values in figures.items():
        keys = name.partition(", ")[2]
        hmac = figures[f"hmac, {keys}"]
        result[name] = {
            "us_per_delivery": round(statistics.median(values), 2),
            "ratio_to_hmac": round(
                statistics.median(v / h for v, h in zip(values, hmac, strict=True)), 2
            ),
        }
    print(f"{args.rounds} rounds of {args.calls} calls, body {len(body)} bytes:")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
