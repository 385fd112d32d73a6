"""A FastAPI app that uvicorn serves in ``tests/test_kill_uvicorn.py`` until it is killed -9.

``POST /orders`` adds one durable task and returns its job id and a key the task writes
to ``KILL_APP_EFFECTS`` (one line per run, so a test sees each task's effect). The task
takes ``KILL_APP_TASK_SECONDS`` so that the kill usually lands while it runs.

    AFTERWARD_URL=sqlite:////tmp/x.db uvicorn tests.apps.kill_app:app
    AFTERWARD_URL=sqlite:////tmp/x.db afterward worker tests.apps.kill_app:tasks
"""

from __future__ import annotations

import os
import time
import uuid

from fastapi import FastAPI

from afterward import Afterward, BackgroundTasks, task
from tests.apps._append import append_line

tasks = Afterward(
    os.environ["AFTERWARD_URL"],
    rescue_interval=float(os.environ.get("KILL_APP_RESCUE_INTERVAL", "0.5")),
)
app = FastAPI(lifespan=tasks.lifespan)


# Each server that starts rescues the jobs of the servers killed before it and runs them,
# and may be killed before they finish: every such loss costs an attempt, so a crash loop
# of 200 servers needs more attempts than the default 5.
@task(max_attempts=25)
def deliver(key: str) -> str:
    """The side effect: started, then (after a while) done, both logged with this pid."""
    effects = os.environ["KILL_APP_EFFECTS"]
    append_line(effects, f"start {key} {os.getpid()}")
    time.sleep(float(os.environ.get("KILL_APP_TASK_SECONDS", "0.05")))
    append_line(effects, f"done {key} {os.getpid()}")
    return key


@app.post("/orders")
def create_order(background_tasks: BackgroundTasks) -> dict[str, str]:
    """Accept an order; its delivery runs after the response."""
    key = uuid.uuid4().hex
    handle = background_tasks.add_task(deliver, key)
    return {"job": handle.id, "key": key}
