"""The FastAPI drop-in through TestClient: every way a user hands work to ``BackgroundTasks``.

Covers the injected parameter (on a path operation, on dependencies sharing one instance,
passed on to a helper), tasks made by hand in endpoints, ``@app.middleware("http")`` and
exception handlers, sync/async and positional/keyword calls run in add order as a chain,
raising endpoints dropping their tasks, the stored-before-the-response-starts guarantee,
storage failure answering 5xx, in-process fallback and refused input, and a regression
guard that FastAPI really injects afterward's class.

Each test runs in three set-ups a user can have: zero-config (the process default, no
middleware), ``FastAPI(lifespan=tasks.lifespan)`` and ``afterward.install(app, tasks)``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
import starlette.background
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import RequestResponseEndpoint
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import afterward
from afterward import (
    Afterward,
    AfterwardWarning,
    BackgroundTask,
    BackgroundTasks,
    JobState,
    NotStorableError,
    PayloadError,
    task,
)
from afterward.integrations.starlette import BackgroundTasks as AfterwardTasksClass

ran: list[str] = []
ERRORS: list[BaseException] = []
HANDLES: list[str] = []


def record(message: str) -> str:
    ran.append(message)
    return message.upper()


async def arecord(message: str, *, suffix: str = "") -> dict[str, str]:
    await asyncio.sleep(0)
    ran.append(message + suffix)
    return {"said": message + suffix}


@task(max_attempts=1)
def fail_step(message: str) -> None:
    ran.append(message)
    raise RuntimeError(f"{message} broke")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    ran.clear()
    ERRORS.clear()
    HANDLES.clear()
    yield
    ran.clear()


@dataclass
class Setup:
    """How the app under test was given afterward, and where its jobs are."""

    mode: str
    tasks: Afterward
    db: Path

    def app(self) -> FastAPI:
        if self.mode == "lifespan":
            return FastAPI(lifespan=self.tasks.lifespan)
        app = FastAPI()
        if self.mode == "install":
            afterward.install(app, self.tasks)
        return app

    @property
    def middleware(self) -> bool:
        return self.mode != "zero-config"

    def job(self, job_id: str) -> afterward.Job:
        job = self.tasks.get_job(job_id)
        assert job is not None, f"job {job_id} was never stored"
        return job


MODES = ["zero-config", "lifespan", "install"]


def _make_setup(
    mode: str, default_app: Afterward, make_app: type[Afterward], tmp_path: Path
) -> Setup:
    if mode == "zero-config":
        return Setup(mode, default_app, tmp_path / "jobs.db")
    db = tmp_path / "explicit.db"
    return Setup(mode, make_app(f"sqlite:///{db}"), db)


@pytest.fixture(params=MODES)
def setup(
    request: pytest.FixtureRequest,
    default_app: Afterward,
    make_app: type[Afterward],
    tmp_path: Path,
) -> Setup:
    """Each way of using afterward: import only, lifespan, install."""
    return _make_setup(str(request.param), default_app, make_app, tmp_path)


# Hand-made tasks are stored before the response starts only where the middleware runs
# (README, caveats): these cases pair each source with the modes that promise it.
STORE_CASES = [("zero-config", "parameter")] + [
    (mode, source)
    for mode in MODES[1:]
    for source in ["parameter", "hand-made", "middleware", "handler"]
]


def rows(db: Path) -> list[tuple[str, str, str]]:
    """(id, task, state) of every stored job, read with a separate connection."""
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, task, state FROM afterward_jobs ORDER BY id"))


# -- 1. the injected parameter ----------------------------------------------------------


def test_parameter_sync_async_positional_keyword_run_in_order_and_complete(setup: Setup) -> None:
    app = setup.app()

    @app.post("/signup/{who}")
    async def signup(who: str, background_tasks: BackgroundTasks) -> dict[str, list[str]]:
        first = background_tasks.add_task(record, f"welcome {who}")
        second = background_tasks.add_task(arecord, who, suffix="!")
        third = background_tasks.add_task(record, message="audit")
        return {"jobs": [first.id, second.id, third.id]}

    with TestClient(app) as client:
        response = client.post("/signup/ada")
        # Run-after-response: done before TestClient hands the response back, as in Starlette.
        assert ran == ["welcome ada", "ada!", "audit"]
    assert response.status_code == 200
    ids = response.json()["jobs"]
    jobs = [setup.job(i) for i in ids]
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 3
    assert [j.attempt for j in jobs] == [1, 1, 1]
    assert [setup.tasks.result(i) for i in ids] == ["WELCOME ADA", {"said": "ada!"}, "AUDIT"]
    assert jobs[0].task == f"{__name__}:record"
    assert jobs[1].task == f"{__name__}:arecord"
    # One response's tasks are one chain: each step names the next.
    assert [j.chain_next for j in jobs] == [ids[1], ids[2], None]


def test_sync_endpoint_parameter(setup: Setup) -> None:
    app = setup.app()

    @app.get("/ping")
    def ping(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"job": background_tasks.add_task(record, "pong").id}

    with TestClient(app) as client:
        response = client.get("/ping")
    assert ran == ["pong"]
    job = setup.job(response.json()["job"])
    assert job.state is JobState.COMPLETED
    assert setup.tasks.result(job.id) == "PONG"


def audit_dependency(background_tasks: BackgroundTasks) -> AfterwardTasksClass:
    background_tasks.add_task(record, "from dependency")
    HANDLES.append(str(id(background_tasks)))
    return background_tasks


async def nested_dependency(
    inner: Annotated[AfterwardTasksClass, Depends(audit_dependency)],
    background_tasks: BackgroundTasks,
) -> AfterwardTasksClass:
    assert inner is background_tasks
    background_tasks.add_task(arecord, "from nested dependency")
    return background_tasks


def test_dependencies_and_endpoint_share_one_instance_in_add_order(setup: Setup) -> None:
    app = setup.app()

    @app.post("/order")
    def order(
        background_tasks: BackgroundTasks,
        from_dep: Annotated[AfterwardTasksClass, Depends(nested_dependency)],
    ) -> dict[str, Any]:
        background_tasks.add_task(record, "from endpoint")
        return {
            "same": from_dep is background_tasks,
            "ids": [str(id(background_tasks)), *HANDLES],
            "count": len(background_tasks.tasks),
        }

    with TestClient(app) as client:
        body = client.post("/order").json()
    assert body["same"] is True
    assert body["ids"][0] == body["ids"][1]
    assert body["count"] == 3
    assert ran == ["from dependency", "from nested dependency", "from endpoint"]
    assert {state for _, _, state in rows(setup.db)} == {"completed"}
    assert len(rows(setup.db)) == 3


def schedule_welcome(tasks: AfterwardTasksClass, who: str) -> str:
    """A user's helper that receives the injected object and adds to it."""
    tasks.add_task(record, f"mail {who}")
    return tasks.add_task(arecord, f"sms {who}").id


def test_parameter_passed_on_to_a_helper(setup: Setup) -> None:
    app = setup.app()

    @app.post("/welcome/{who}")
    def welcome(who: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"job": schedule_welcome(background_tasks, who)}

    with TestClient(app) as client:
        response = client.post("/welcome/bob")
    assert ran == ["mail bob", "sms bob"]
    assert setup.job(response.json()["job"]).state is JobState.COMPLETED


# -- 2. task objects made by hand -------------------------------------------------------

HAND_MADE = ["tasks-in-constructor", "task-in-constructor", "tasks-assigned", "task-assigned"]


def hand_made_response(how: str, message: str) -> Response:
    """A response carrying one stored task, built in each way Starlette allows."""
    if how.startswith("tasks"):
        tasks = BackgroundTasks()
        HANDLES.append(tasks.add_task(record, message).id)
        background: starlette.background.BackgroundTask = tasks
    else:
        one = BackgroundTask(record, message)
        HANDLES.append(one.handle.id)
        background = one
    if how.endswith("constructor"):
        return JSONResponse({"ok": True}, background=background)
    response = JSONResponse({"ok": True})
    response.background = background
    return response


@pytest.mark.parametrize("how", HAND_MADE)
def test_hand_made_tasks_in_endpoint(setup: Setup, how: str) -> None:
    app = setup.app()

    @app.get("/hand")
    async def hand() -> Response:
        return hand_made_response(how, f"endpoint {how}")

    with TestClient(app) as client:
        assert client.get("/hand").status_code == 200
    assert ran == [f"endpoint {how}"]
    assert setup.job(HANDLES[0]).state is JobState.COMPLETED
    assert setup.tasks.result(HANDLES[0]) == f"ENDPOINT {how}".upper()


@pytest.mark.parametrize("how", HAND_MADE)
def test_hand_made_tasks_in_middleware_and_endpoint_tasks_all_run(setup: Setup, how: str) -> None:
    app = setup.app()

    @app.middleware("http")
    async def add_audit(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        made = hand_made_response(how, f"middleware {request.url.path}")
        response.background = made.background
        return response

    @app.get("/both")
    def both(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"job": background_tasks.add_task(record, "endpoint").id}

    @app.get("/both-by-hand")
    def both_by_hand() -> Response:
        return hand_made_response("tasks-in-constructor", "endpoint by hand")

    with TestClient(app) as client:
        endpoint_job = client.get("/both").json()["job"]
        assert client.get("/both-by-hand").status_code == 200
    # Neither the middleware's nor the endpoint's tasks are dropped.
    assert sorted(ran) == sorted(
        ["endpoint", "middleware /both", "endpoint by hand", "middleware /both-by-hand"]
    )
    for job_id in [endpoint_job, *HANDLES]:
        assert setup.job(job_id).state is JobState.COMPLETED


# -- 5. exceptions ------------------------------------------------------------------------


class Conflict(Exception):
    pass


@pytest.mark.parametrize("how", HAND_MADE)
def test_raising_endpoint_enqueues_nothing_but_its_handler_tasks_run(
    setup: Setup, how: str
) -> None:
    app = setup.app()

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        response = hand_made_response(how, f"handler {exc.status_code}")
        response.status_code = exc.status_code
        return response

    @app.post("/pay")
    def pay(background_tasks: BackgroundTasks) -> None:
        ERRORS.append(Conflict(background_tasks.add_task(record, "charged").id))
        raise HTTPException(status_code=409, detail="already paid")

    with TestClient(app) as client:
        response = client.post("/pay")
    assert response.status_code == 409
    assert ran == ["handler 409"]
    dropped = str(ERRORS[0])
    assert setup.tasks.get_job(dropped) is None  # FastAPI parity: never stored, never run
    assert [r[0] for r in rows(setup.db)] == [HANDLES[0]]
    assert setup.job(HANDLES[0]).state is JobState.COMPLETED


def test_server_error_handler_tasks_run(setup: Setup) -> None:
    app = setup.app()

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        tasks = BackgroundTasks()
        HANDLES.append(tasks.add_task(arecord, "page the on-call", suffix=f": {exc}").id)
        return JSONResponse({"error": "sorry"}, status_code=500, background=tasks)

    @app.get("/crash")
    def crash(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, "never")
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {"error": "sorry"}
    assert ran == ["page the on-call: boom"]
    assert [r[0] for r in rows(setup.db)] == HANDLES
    assert setup.job(HANDLES[0]).state is JobState.COMPLETED


# -- 4. chains ----------------------------------------------------------------------------


def test_failed_step_cancels_later_steps_naming_it(setup: Setup) -> None:
    app = setup.app()

    @app.post("/chain")
    def chain(background_tasks: BackgroundTasks) -> list[str]:
        return [
            background_tasks.add_task(record, "step 1").id,
            background_tasks.add_task(fail_step, "step 2").id,
            background_tasks.add_task(record, "step 3").id,
            background_tasks.add_task(arecord, "step 4").id,
        ]

    with TestClient(app) as client:
        ids = client.post("/chain").json()
    assert ran == ["step 1", "step 2"]
    jobs = [setup.job(i) for i in ids]
    assert [j.state for j in jobs] == [
        JobState.COMPLETED,
        JobState.DISCARDED,
        JobState.CANCELLED,
        JobState.CANCELLED,
    ]
    assert jobs[1].error is not None
    assert "step 2 broke" in jobs[1].error["error"]
    for later in jobs[2:]:
        assert later.error is not None
        assert ids[1] in later.error["error"], later.error


# -- 7. regression: the user's tasks never silently bypass afterward --------------------


FASTAPIS = "fastapi.background.BackgroundTasks"


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class PlainSubclass(starlette.background.BackgroundTasks):
    """What a naive drop-in would be: a subclass of Starlette's class."""


def test_fastapi_injects_afterwards_class_and_the_job_is_stored(setup: Setup) -> None:
    app = setup.app()

    @app.post("/injected")
    def injected(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {
            "class": qualified(type(background_tasks)),
            "job": background_tasks.add_task(record, "kept").id,
        }

    with TestClient(app) as client:
        body = client.post("/injected").json()
    assert body["class"] == "afterward.integrations.starlette.BackgroundTasks"
    assert [r[0] for r in rows(setup.db)] == [body["job"]]
    assert setup.job(body["job"]).state is JobState.COMPLETED


def test_a_bare_subclass_annotation_would_be_bypassed_by_fastapi(default_app: Afterward) -> None:
    """FastAPI injects its own class for any Starlette ``BackgroundTasks`` subclass.

    This is why ``afterward.BackgroundTasks`` is ``Annotated[<class>, Depends(...)]``: a
    plain subclass (even afterward's class itself, unannotated) would be replaced by
    ``fastapi.BackgroundTasks`` and its tasks would run in memory, never stored.
    """
    app = FastAPI()

    @app.get("/plain")
    def plain(background_tasks: PlainSubclass) -> dict[str, bool]:
        background_tasks.add_task(record, "in memory")
        return {"fastapis": qualified(type(background_tasks)) == FASTAPIS}

    @app.get("/bare")
    def bare(background_tasks: AfterwardTasksClass) -> dict[str, bool]:
        background_tasks.add_task(record, "in memory too")
        return {"fastapis": qualified(type(background_tasks)) == FASTAPIS}

    with TestClient(app) as client:
        assert client.get("/plain").json() == {"fastapis": True}
        assert client.get("/bare").json() == {"fastapis": True}
    # They ran, as Starlette runs them, but nothing was stored: that is the bypass.
    assert ran == ["in memory", "in memory too"]
    assert default_app.list_jobs() == []


# -- 8. stored before the response starts; storage failure is a 5xx ----------------------


def spy_on_start(app: ASGIApp, db: Path, seen: list[list[tuple[str, str, str]]]) -> ASGIApp:
    """Read the SQLite file at the moment the response start leaves the app."""

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        async def spy(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen.append(rows(db) if db.exists() else [])
            await send(message)

        await app(scope, receive, spy)

    return outer


@pytest.mark.parametrize(("mode", "source"), STORE_CASES)
def test_jobs_are_in_the_file_before_the_response_starts(
    mode: str, source: str, default_app: Afterward, make_app: type[Afterward], tmp_path: Path
) -> None:
    setup = _make_setup(mode, default_app, make_app, tmp_path)
    app = setup.app()

    if source == "middleware":

        @app.middleware("http")
        async def add(request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            response.background = BackgroundTask(record, "from middleware")
            HANDLES.append(response.background.handle.id)
            return response

    @app.exception_handler(Conflict)
    async def on_conflict(request: Request, exc: Conflict) -> Response:
        return hand_made_response("task-assigned", "from handler")

    @app.get("/start")
    def start(background_tasks: BackgroundTasks) -> Response:
        if source == "parameter":
            HANDLES.append(background_tasks.add_task(record, "from parameter").id)
        elif source == "hand-made":
            return hand_made_response("tasks-in-constructor", "by hand")
        elif source == "handler":
            raise Conflict
        return JSONResponse({})

    seen: list[list[tuple[str, str, str]]] = []
    with TestClient(spy_on_start(app, setup.db, seen)) as client:
        assert client.get("/start").status_code == 200
    assert len(seen) == 1
    # At response start the job is stored and claimed by this process, not yet run.
    assert seen[0] == [(HANDLES[0], f"{__name__}:record", "running")]
    assert len(ran) == 1
    assert setup.job(HANDLES[0]).state is JobState.COMPLETED


BREAKS = ["trigger", "drop-table"]


def break_storage(db: Path, how: str) -> None:
    """Make every insert fail for real, from another connection."""
    with sqlite3.connect(db) as conn:
        if how == "trigger":
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON afterward_jobs "
                "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
            )
        else:
            conn.execute("DROP TABLE afterward_jobs")


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize(
    ("mode", "source"), [c for c in STORE_CASES if c[1] in ("parameter", "hand-made")]
)
def test_storage_failure_answers_5xx_and_runs_nothing(
    mode: str,
    source: str,
    how: str,
    default_app: Afterward,
    make_app: type[Afterward],
    tmp_path: Path,
) -> None:
    setup = _make_setup(mode, default_app, make_app, tmp_path)
    app = setup.app()

    @app.get("/ok")
    def ok(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"job": background_tasks.add_task(record, "before").id}

    @app.get("/save")
    def save(background_tasks: BackgroundTasks) -> Response:
        if source == "parameter":
            background_tasks.add_task(record, "lost?")
            return JSONResponse({"saved": True})
        return hand_made_response("task-in-constructor", "lost?")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/ok").status_code == 200  # the file exists and works
        break_storage(setup.db, how)
        response = client.get("/save")
    assert response.status_code >= 500
    assert "saved" not in response.text
    assert ran == ["before"]


# -- 9. in-process fallback, strict mode, refused input ------------------------------------


def test_lambda_and_closure_run_in_process_with_one_warning_each(setup: Setup) -> None:
    app = setup.app()
    greeting = "hi"

    def closure(who: str) -> None:
        ran.append(f"{greeting} {who}")

    @app.get("/local")
    def local(background_tasks: BackgroundTasks) -> list[bool]:
        a = background_tasks.add_task(lambda: ran.append("lambda ran"))
        b = background_tasks.add_task(closure, "closure")
        c = background_tasks.add_task(record, "stored")
        return [a.durable, b.durable, c.durable]

    with (
        pytest.warns(AfterwardWarning) as caught,
        TestClient(app) as client,
    ):
        durable = client.get("/local").json()
    assert durable == [False, False, True]
    messages = [str(w.message) for w in caught if issubclass(w.category, AfterwardWarning)]
    assert len(messages) == 2, messages
    assert "<lambda>" in messages[0]
    assert "closure" in messages[1]
    assert ran == ["lambda ran", "hi closure", "stored"]
    assert [r[1:] for r in rows(setup.db)] == [(f"{__name__}:record", "completed")]


def test_strict_mode_refuses_a_lambda_at_add_task(
    make_app: type[Afterward], tmp_path: Path
) -> None:
    tasks = make_app(f"sqlite:///{tmp_path / 'strict.db'}", strict=True)
    app = FastAPI(lifespan=tasks.lifespan)

    @app.get("/strict")
    def strict(background_tasks: BackgroundTasks) -> None:
        try:
            background_tasks.add_task(lambda: ran.append("never"))
        except NotStorableError as e:
            ERRORS.append(e)
            raise

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # strict mode never falls back with a warning
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/strict").status_code == 500
    assert len(ERRORS) == 1
    assert "<lambda>" in str(ERRORS[0])
    assert ran == []
    assert tasks.list_jobs() == []


BAD_INPUT = {
    "nan": (float("nan"), "not a finite number"),
    "nul": ("a\x00b", "NUL"),
    "surrogate": ("\ud800", "lone surrogate"),
    "oversize": ("x" * 3000, "over the 2,048-byte limit"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUT))
def test_bad_input_raises_payload_error_at_add_task_naming_it(
    make_app: type[Afterward], tmp_path: Path, kind: str
) -> None:
    tasks = make_app(f"sqlite:///{tmp_path / 'bad.db'}", max_payload_bytes=2048)
    app = FastAPI(lifespan=tasks.lifespan)
    value, problem = BAD_INPUT[kind]

    @app.post("/note")
    def note(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, "fine")
        try:
            background_tasks.add_task(arecord, "x", suffix=value)  # type: ignore[arg-type]
        except PayloadError as e:
            ERRORS.append(e)
            raise

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/note").status_code == 500
    assert len(ERRORS) == 1
    message = str(ERRORS[0])
    assert problem in message
    assert "'suffix'" in message
    assert f"{__name__}:arecord" in message
    # The endpoint raised, so nothing it added was stored or run.
    assert ran == []
    assert tasks.list_jobs() == []


@pytest.mark.parametrize("how", ["raised", "never attached"])
def test_hand_made_tasks_that_no_response_carries_never_run(setup: Setup, how: str) -> None:
    """Starlette runs a task object only when a response carries it; so do we.

    Under the middleware it was stored as the response started (nothing tells afterward
    which objects a response carries until it calls them), so it ends ``cancelled`` with
    the reason; without the middleware it is never stored.
    """
    app = setup.app()

    @app.get("/orphan")
    def orphan() -> dict[str, bool]:
        tasks = BackgroundTasks()
        HANDLES.append(tasks.add_task(record, "orphan").id)
        if how == "raised":
            raise HTTPException(status_code=402)
        return {"ok": True}

    with TestClient(app) as client:
        client.get("/orphan")
    assert ran == []
    job = setup.tasks.get_job(HANDLES[0])
    if setup.middleware:
        assert job is not None
        assert job.state is JobState.CANCELLED
        assert job.error is not None
        assert "no response carried" in job.error["error"]
    else:
        assert job is None
