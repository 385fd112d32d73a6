"""The drop-in on a plain Starlette app (no FastAPI routing) through TestClient.

Covers ``Route`` endpoints returning ``Response(background=...)`` with task objects made
by hand (``afterward.BackgroundTasks()`` — the public name stays callable even though it
is FastAPI's ``Annotated`` alias — the Starlette-module class, and ``BackgroundTask``),
``response.background = ...``, middleware and exception handlers adding tasks, tasks
from endpoint and middleware both running, chains cancelled after a failed step, the
stored-before-the-response-starts guarantee and a 500 when storing fails.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask as StarletteTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import afterward
from afterward import Afterward, BackgroundTask, BackgroundTasks, JobState, task
from afterward.integrations.starlette import BackgroundTasks as StarletteModuleTasks

ran: list[str] = []
IDS: list[str] = []


def record(message: str) -> str:
    ran.append(message)
    return message.upper()


async def arecord(message: str, *, times: int = 1) -> int:
    await asyncio.sleep(0)
    ran.append(message * times)
    return times


@task(max_attempts=1)
async def refuse(message: str) -> None:
    raise ValueError(f"refused {message}")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    ran.clear()
    IDS.clear()
    yield
    ran.clear()


@dataclass
class Setup:
    mode: str
    tasks: Afterward
    db: Path

    def app(
        self,
        routes: list[Route],
        middleware: list[Middleware] | None = None,
        handlers: dict[type[Exception], Callable[..., object]] | None = None,
    ) -> Starlette:
        app = Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers=handlers,  # type: ignore[arg-type]
            lifespan=self.tasks.lifespan if self.mode == "lifespan" else None,
        )
        if self.mode == "install":
            afterward.install(app, self.tasks)
        return app

    def job(self, job_id: str) -> afterward.Job:
        job = self.tasks.get_job(job_id)
        assert job is not None, f"job {job_id} was never stored"
        return job


@pytest.fixture(params=["zero-config", "lifespan", "install"])
def setup(
    request: pytest.FixtureRequest,
    default_app: Afterward,
    make_app: type[Afterward],
    tmp_path: Path,
) -> Setup:
    mode = str(request.param)
    if mode == "zero-config":
        return Setup(mode, default_app, tmp_path / "jobs.db")
    db = tmp_path / "explicit.db"
    return Setup(mode, make_app(f"sqlite:///{db}"), db)


def rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, state FROM afterward_jobs ORDER BY id"))


KINDS = ["public-name", "module-class", "one-task", "assigned"]


def carrying(kind: str, message: str, status: int = 200) -> Response:
    """A response carrying stored work, made the ways a Starlette user makes it."""
    response = PlainTextResponse("ok", status_code=status)
    if kind == "one-task":
        one = BackgroundTask(arecord, message, times=2)
        IDS.append(one.handle.id)
        response.background = one
        return response
    tasks = BackgroundTasks() if kind != "module-class" else StarletteModuleTasks()
    IDS.append(tasks.add_task(record, message).id)
    if kind == "assigned":
        response.background = tasks
        return response
    return PlainTextResponse("ok", status_code=status, background=tasks)


def expected(kind: str, message: str) -> str:
    return message * 2 if kind == "one-task" else message


@pytest.mark.parametrize("kind", KINDS)
def test_route_endpoint_response_background(setup: Setup, kind: str) -> None:
    async def endpoint(request: Request) -> Response:
        return carrying(kind, "sync" if kind != "one-task" else "a")

    with TestClient(setup.app([Route("/", endpoint)])) as client:
        assert client.get("/").text == "ok"
    assert ran == [expected(kind, "sync" if kind != "one-task" else "a")]
    job = setup.job(IDS[0])
    assert job.state is JobState.COMPLETED
    assert setup.tasks.result(IDS[0]) == (2 if kind == "one-task" else "SYNC")


def test_sync_route_endpoint_keeps_add_order(setup: Setup) -> None:
    def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        IDS.extend(
            [
                tasks.add_task(record, "one").id,
                tasks.add_task(arecord, "two", times=1).id,
                tasks.add_task(record, message="three").id,
            ]
        )
        return JSONResponse(IDS, background=tasks)

    with TestClient(setup.app([Route("/", endpoint, methods=["POST"])])) as client:
        assert client.post("/").json() == IDS
    assert ran == ["one", "two", "three"]
    assert [setup.job(i).state for i in IDS] == [JobState.COMPLETED] * 3


def test_tasks_listed_in_constructor_are_stored_and_run_in_order(setup: Setup) -> None:
    async def endpoint(request: Request) -> Response:
        first = BackgroundTask(record, "first")
        second = BackgroundTask(arecord, "second")
        IDS.extend([first.handle.id, second.handle.id])
        # Starlette-style: a list of task objects, one of them Starlette's own class.
        tasks = BackgroundTasks([first, second, StarletteTask(record, "third")])
        return PlainTextResponse("ok", background=tasks)

    with TestClient(setup.app([Route("/", endpoint)])) as client:
        client.get("/")
    assert ran == ["first", "second", "third"]
    assert len(rows(setup.db)) == 3
    assert {state for _, state in rows(setup.db)} == {"completed"}
    assert [setup.job(i).state for i in IDS] == [JobState.COMPLETED] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_middleware_and_endpoint_tasks_both_run(setup: Setup, kind: str) -> None:
    class Audit(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            response.background = carrying(kind, "middleware").background
            return response

    async def endpoint(request: Request) -> Response:
        return carrying("public-name", "endpoint")

    app = setup.app([Route("/", endpoint)], middleware=[Middleware(Audit)])
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    assert sorted(ran) == sorted(["endpoint", expected(kind, "middleware")])
    assert [setup.job(i).state for i in IDS] == [JobState.COMPLETED] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_exception_handler_tasks_run(setup: Setup, kind: str) -> None:
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return carrying(kind, f"handled {exc.status_code}", status=exc.status_code)

    async def endpoint(request: Request) -> Response:
        raise HTTPException(status_code=404)

    app = setup.app([Route("/", endpoint)], handlers={HTTPException: on_http_error})
    with TestClient(app) as client:
        assert client.get("/").status_code == 404
    assert ran == [expected(kind, "handled 404")]
    assert setup.job(IDS[0]).state is JobState.COMPLETED


def test_failed_step_cancels_the_rest_of_the_chain(setup: Setup) -> None:
    async def endpoint(request: Request) -> Response:
        tasks = BackgroundTasks()
        IDS.extend(
            [
                tasks.add_task(record, "a").id,
                tasks.add_task(refuse, "b").id,
                tasks.add_task(record, "c").id,
            ]
        )
        return PlainTextResponse("ok", background=tasks)

    with TestClient(setup.app([Route("/", endpoint)])) as client:
        client.get("/")
    assert ran == ["a"]
    jobs = [setup.job(i) for i in IDS]
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.DISCARDED, JobState.CANCELLED]
    assert jobs[1].error is not None
    assert "refused b" in jobs[1].error["error"]
    assert jobs[2].error is not None
    assert IDS[1] in jobs[2].error["error"]


@pytest.mark.parametrize("mode", ["lifespan", "install"])
def test_stored_before_response_start_and_500_when_storing_fails(
    make_app: type[Afterward], default_app: Afterward, tmp_path: Path, mode: str
) -> None:
    db = tmp_path / "explicit.db"
    setup = Setup(mode, make_app(f"sqlite:///{db}"), db)
    seen: list[list[tuple[str, str]]] = []

    async def endpoint(request: Request) -> Response:
        return carrying("public-name", request.path_params["what"])

    app = setup.app([Route("/{what}", endpoint)])

    async def spy_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def spy(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.append(rows(db))
            await send(message)

        await app(scope, receive, spy)

    spied: ASGIApp = spy_app
    with TestClient(spied, raise_server_exceptions=False) as client:
        assert client.get("/first").status_code == 200
        assert seen == [[(IDS[0], "running")]]  # stored and held by this process, not yet run
        with sqlite3.connect(db) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON afterward_jobs "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        response = client.get("/second")
        assert response.status_code == 500
        assert "could not be stored" in response.text
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER refuse")
        assert client.get("/third").status_code == 200
    assert ran == ["first", "third"]
    assert [state for _, state in rows(db)] == ["completed", "completed"]
