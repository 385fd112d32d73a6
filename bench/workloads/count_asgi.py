"""Drive ``webapp.app`` through ASGI, without HTTP: N GET requests to PATH, 8 at a time.

usage: count_asgi.py N PATH     (run under valgrind by ``bench/count.py``)

Lifespan start-up and shutdown run around the requests, as a server would run them.
``AFTERWARD_URL`` is set to a fresh SQLite file before the app is imported.
"""

import asyncio
import os
import sys
import tempfile
from typing import Any

os.environ["AFTERWARD_URL"] = f"sqlite:///{tempfile.mkdtemp(prefix='aw_count_')}/jobs.db"

import webapp  # after AFTERWARD_URL is set: the app reads it at import

CLIENTS = 8


async def _request(path: str) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if body:
            return body.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        pass

    await webapp.app(scope, receive, send)


async def _client(n: int, path: str) -> None:
    for _ in range(n):
        await _request(path)


async def run(n: int, path: str) -> None:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await inbox.get()

    async def send(message: dict[str, Any]) -> None:
        outbox.append(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    lifespan = asyncio.create_task(webapp.app(scope, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    for _ in range(1000):  # bounded: start-up takes a few milliseconds
        if outbox:
            break
        await asyncio.sleep(0.005)
    await asyncio.gather(*(_client(n // CLIENTS, path) for _ in range(CLIENTS)))
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan


def main() -> None:
    import uvloop

    uvloop.run(run(int(sys.argv[1]), sys.argv[2]))
    os.write(1, b"ok\n")


if __name__ == "__main__":
    main()
