"""FastAPI app for the HTTP workloads (uvicorn, one worker).

/plain                  returns JSON, no task (baseline)
/bg_async, /bg_sync     + fastapi.BackgroundTasks with an async / sync no-op
/aw_async, /aw_sync     + afterward.BackgroundTasks with an async / sync no-op
/dep_async              /bg_async with its tasks received through one plain async dependency
/dep_plain              /plain with one plain async dependency (no task)
The two /dep_ routes measure the ceiling of any drop-in: FastAPI only hands a class of
ours to an endpoint through ``Depends``, so the drop-in pays at least one dependency.
BENCH_AW_LIFESPAN=1 gives the app ``lifespan=tasks.lifespan`` (middleware installed);
otherwise it is the zero-config drop-in (only the import changed).
AFTERWARD_URL names the SQLite file.
"""

import os
from typing import Annotated

import fastapi
from fastapi import Depends, FastAPI

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


async def _same_tasks(background_tasks: fastapi.BackgroundTasks) -> fastapi.BackgroundTasks:
    return background_tasks


@app.get("/dep_async")
async def dep_async(
    background_tasks: Annotated[fastapi.BackgroundTasks, Depends(_same_tasks)],
) -> dict[str, bool]:
    background_tasks.add_task(noop_async)
    return {"ok": True}


async def _one() -> int:
    return 1


@app.get("/dep_plain")
async def dep_plain(one: Annotated[int, Depends(_one)]) -> dict[str, bool]:
    return {"ok": one == 1}
