"""FastAPI app for the HTTP workloads (uvicorn, one worker).

/plain                  returns JSON, no task (baseline)
/bg_async, /bg_sync     + fastapi.BackgroundTasks with an async / sync no-op
/aw_async, /aw_sync     + afterward.BackgroundTasks with an async / sync no-op
BENCH_AW_LIFESPAN=1 gives the app ``lifespan=tasks.lifespan`` (middleware installed);
otherwise it is the zero-config drop-in (only the import changed).
AFTERWARD_URL names the SQLite file.
"""

import os

import fastapi
from fastapi import FastAPI

import afterward
from afterward import Afterward

if os.environ.get("BENCH_AW_LIFESPAN") == "1":
    aw = Afterward(os.environ.get("AFTERWARD_URL"))
    app = FastAPI(lifespan=aw.lifespan)
else:
    app = FastAPI()


def noop_sync() -> None:
    pass


async def noop_async() -> None:
    pass


@app.get("/plain")
async def plain() -> dict[str, bool]:
    return {"ok": True}


@app.get("/bg_async")
async def bg_async(background_tasks: fastapi.BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(noop_async)
    return {"ok": True}


@app.get("/bg_sync")
async def bg_sync(background_tasks: fastapi.BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(noop_sync)
    return {"ok": True}


@app.get("/aw_async")
async def aw_async(background_tasks: afterward.BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(noop_async)
    return {"ok": True}


@app.get("/aw_sync")
async def aw_sync(background_tasks: afterward.BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(noop_sync)
    return {"ok": True}
