"""The shortest path a user takes: FastAPI, one import changed, TestClient."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from afterward import Afterward, BackgroundTasks, JobState

EFFECTS: list[str] = []


def record(message: str) -> str:
    EFFECTS.append(message)
    return message.upper()


def test_add_task_is_stored_run_and_visible(default_app: Afterward) -> None:
    app = FastAPI()

    @app.post("/notify/{who}")
    def notify(who: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        handle = background_tasks.add_task(record, f"hello {who}")
        return {"job": handle.id}

    EFFECTS.clear()
    response = TestClient(app).post("/notify/ada")
    assert response.status_code == 200
    assert EFFECTS == ["hello ada"]  # ran before TestClient returned, as with Starlette
    job = default_app.get_job(response.json()["job"])
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.attempt == 1
    assert default_app.result(job.id) == "HELLO ADA"
