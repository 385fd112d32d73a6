"""A FastAPI app the drop-in tests serve with a real uvicorn process.

``DROPIN_DB`` is its SQLite file, ``DROPIN_EFFECTS`` the file its tasks append lines to
(the effect a test checks from outside), ``DROPIN_GATES`` a directory: a streaming body
waits until a file named after it appears there, so a test can look at the database
while the response has started but not finished.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.middleware.base import RequestResponseEndpoint

from afterward import Afterward, BackgroundTask, BackgroundTasks, task

EFFECTS = Path(os.environ["DROPIN_EFFECTS"])
GATES = Path(os.environ["DROPIN_GATES"])

tasks = Afterward(f"sqlite:///{os.environ['DROPIN_DB']}")
app = FastAPI(lifespan=tasks.lifespan)


def write_effect(line: str) -> str:
    with EFFECTS.open("a") as f:
        f.write(line + "\n")
    return line.upper()


async def awrite_effect(line: str, *, suffix: str = "") -> dict[str, str]:
    await asyncio.sleep(0)
    write_effect(line + suffix)
    return {"wrote": line + suffix}


@task(max_attempts=1)
def broken(line: str) -> None:
    raise RuntimeError(f"cannot {line}")


@app.middleware("http")
async def audit(request: Request, call_next: RequestResponseEndpoint) -> Response:
    response = await call_next(request)
    if request.url.path.startswith("/audited/"):
        one = BackgroundTask(write_effect, f"audit {request.url.path}")
        response.background = one
        response.headers["x-audit-job"] = one.handle.id
    return response


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/notify/{who}")
async def notify(who: str, background_tasks: BackgroundTasks) -> dict[str, list[str]]:
    first = background_tasks.add_task(write_effect, f"hello {who}")
    second = background_tasks.add_task(awrite_effect, who, suffix="!")
    return {"jobs": [first.id, second.id]}


@app.post("/audited/{who}")
def audited(who: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    return {"job": background_tasks.add_task(write_effect, f"endpoint {who}").id}


@app.post("/chain/{who}")
def chain(who: str, background_tasks: BackgroundTasks) -> list[str]:
    return [
        background_tasks.add_task(write_effect, f"chain {who} 1").id,
        background_tasks.add_task(broken, f"chain {who} 2").id,
        background_tasks.add_task(write_effect, f"chain {who} 3").id,
    ]


async def _gated_body(key: str) -> AsyncIterator[bytes]:
    yield b"started;"
    deadline = time.monotonic() + 20
    for _ in range(4000):  # bounded: the test opens the gate within seconds
        if (GATES / key).exists() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.005)
    yield b"finished"


@app.get("/stream/{how}/{key}")
def stream(how: str, key: str, background_tasks: BackgroundTasks) -> Response:
    """Start a response whose body ends only when the test opens the gate."""
    if how == "parameter":
        job = background_tasks.add_task(write_effect, f"stream {key}").id
        response = StreamingResponse(_gated_body(key))
    else:  # made by hand: stored by the middleware as the response starts
        made = BackgroundTasks()
        job = made.add_task(write_effect, f"stream {key}").id
        response = StreamingResponse(_gated_body(key), background=made)
    response.headers["x-job"] = job
    return response
