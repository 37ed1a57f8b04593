"""A fast loopback HTTP/1.1 receiver (asyncio, keep-alive) in its own process.

It answers every POST and records (arrival time, id, path): the id is the ``webhook-id`` header,
or ``x-bench-id`` for the baselines. Paths choose behaviour: ``/fail...`` always answers 503,
``/flaky...`` answers 503 to the first request of each id and 200 after, ``/slow...`` answers
200 after :data:`SLOW_S` (without holding up other connections). ``GET /stats`` returns the
count (and the counts by the path's first segment, e.g. ``ok`` for ``/ok/7``), ``GET /dump``
every record, ``POST /reset`` forgets them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

Record = tuple[float, str, str]

#: How long ``/slow...`` paths take to answer.
SLOW_S = 2.0


class State:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.seen: set[str] = set()
        self.kinds: Counter[str] = Counter()


async def _serve(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            length, ident = 0, ""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name in (b"webhook-id", b"x-bench-id"):
                    ident = value.strip().decode()
            if length:
                await reader.readexactly(length)
            status, body = 200, b"ok"
            route = path.decode()
            if method == b"GET" and route == "/stats":
                body = json.dumps({"count": len(state.records), "kinds": state.kinds}).encode()
            elif method == b"GET" and route == "/dump":
                body = json.dumps(state.records).encode()
            elif route == "/reset":
                state.records.clear()
                state.seen.clear()
                state.kinds.clear()
            else:
                if route.startswith("/slow"):
                    await asyncio.sleep(SLOW_S)
                state.records.append((arrived, ident, route))
                state.kinds[route.split("/", 2)[1]] += 1
                if route.startswith("/fail") or (
                    route.startswith("/flaky") and ident not in state.seen
                ):
                    status, body = 503, b"unavailable"
                state.seen.add(ident)
            reason = b"OK" if status == 200 else b"Service Unavailable"
            writer.write(
                b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n\r\n%s"
                % (status, reason, len(body), body)
            )
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    state = State()
    server = await asyncio.start_server(
        lambda r, w: _serve(state, r, w), "127.0.0.1", port, limit=1 << 20
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
