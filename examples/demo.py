"""The demo: a FastAPI app whose endpoints add durable tasks and show their status.

Run it with ``./scripts/demo`` and open http://127.0.0.1:8000/docs. Jobs are stored in
``afterward.db`` in the current directory (``AFTERWARD_URL`` overrides it).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from afterward import Afterward, BackgroundTasks, Retry, task

tasks = Afterward()
app = FastAPI(title="afterward demo", lifespan=tasks.lifespan)


class Signup(BaseModel):
    """Who signed up."""

    email: str
    name: str


async def send_welcome_email(user: Signup) -> str:
    """Pretend to send an email (the model comes back as a model on the worker)."""
    await asyncio.sleep(0.2)
    return f"welcome sent to {user.name} <{user.email}>"


@task(max_attempts=4)
def sync_crm(email: str) -> dict[str, Any]:
    """A flaky sync call: fails about half the time, retried with backoff."""
    if random.random() < 0.5:
        raise Retry(delay=1.0, reason="CRM answered 503, trying again in 1s")
    return {"email": email, "crm_id": random.randint(1000, 9999)}


def job_view(job_id: str) -> dict[str, Any]:
    """A job as JSON."""
    job = tasks.get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return {
        "id": job.id,
        "task": job.task,
        "state": job.state.value,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "error": job.error["error"] if job.error else None,
        "result": tasks.result(job.id),
    }


@app.post("/signup")
def signup(user: Signup, background_tasks: BackgroundTasks) -> dict[str, Any]:
    """Add two tasks; they run after the response, in order, and are stored before it."""
    first = background_tasks.add_task(send_welcome_email, user)
    second = background_tasks.add_task(sync_crm, user.email)
    return {"jobs": [first.id, second.id], "status": [f"/jobs/{first.id}", f"/jobs/{second.id}"]}


@app.get("/jobs/{job_id}")
def get_job(job_id: str) -> dict[str, Any]:
    """One job's state, attempts, last error and result."""
    return job_view(job_id)


@app.get("/jobs")
def recent_jobs(limit: int = 20) -> list[dict[str, Any]]:
    """The newest jobs."""
    return [job_view(j.id) for j in tasks.list_jobs(limit=limit)]


@app.get("/")
def index() -> dict[str, str]:
    """What to try."""
    return {
        "try": "curl -X POST 127.0.0.1:8000/signup -H 'content-type: application/json' "
        '-d \'{"email": "ada@example.com", "name": "Ada"}\'',
        "then": "curl 127.0.0.1:8000/jobs",
        "docs": "http://127.0.0.1:8000/docs",
    }
