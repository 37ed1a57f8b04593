"""The HTTP ceiling: a bare ``httpx.Client.post`` loop, no queue (run as its own process)."""

from __future__ import annotations

import json
import sys
import time

import httpx


def main(url: str, count: int) -> None:
    body = json.dumps({"event": "reseller.user.created", "data": {"pad": "x" * 700}}).encode()
    with httpx.Client() as client:
        started = time.perf_counter()
        for i in range(count):
            client.post(url, content=body, headers={"x-bench-id": str(i)})
        elapsed = time.perf_counter() - started
    print(json.dumps({"requests": count, "seconds": elapsed, "per_s": count / elapsed}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
