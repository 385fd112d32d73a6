"""The drop-in served by a real uvicorn process (``tests/apps/dropin_app.py``), hit with httpx.

One server for the module. Checks what a user sees from outside: the tasks' effects in a
file, the stored job states in the SQLite file, the row being in the file when the
response headers arrive (before the body is read), tasks from endpoint and middleware
both running, a failed chain step cancelling the rest, and a 500 — never a 2xx — when the
jobs cannot be stored.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    free_port,
    processes,
    read_db,
    uvicorn_command,
    wait_for,
    wait_for_port,
)

pytestmark = pytest.mark.slow


@dataclass
class Server:
    url: str
    db: Path
    effects: Path
    gates: Path

    def effect_lines(self) -> list[str]:
        return self.effects.read_text().splitlines() if self.effects.exists() else []

    def state(self, job_id: str) -> str | None:
        found = read_db(self.db, "SELECT state FROM afterward_jobs WHERE id = ?", (job_id,))
        return str(found[0]["state"]) if found else None

    def wait_states(self, wanted: dict[str, str], timeout: float = 15.0) -> None:
        def reached() -> bool:
            return all(self.state(i) == s for i, s in wanted.items())

        try:
            wait_for(reached, timeout=timeout, what=f"job states {wanted}")
        except TimeoutError:
            raise AssertionError({i: self.state(i) for i in wanted}) from None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dropin-uvicorn")
    gates = root / "gates"
    gates.mkdir()
    srv = Server("", root / "jobs.db", root / "effects.txt", gates)
    env = {"DROPIN_DB": str(srv.db), "DROPIN_EFFECTS": str(srv.effects), "DROPIN_GATES": str(gates)}
    with processes(root / "logs", env) as procs:
        port = free_port()
        proc = procs.start(
            uvicorn_command("tests.apps.dropin_app:app", port),
            "uvicorn",
        )
        wait_for_port(port, proc)
        srv.url = f"http://127.0.0.1:{port}"
        yield srv
        code = proc.stop()
        # uvicorn re-raises the SIGTERM it handled once it shut down gracefully.
        assert code in (0, -signal.SIGTERM), (code, proc.log_path.read_text()[-3000:])
        assert "Exception in ASGI application" not in proc.log_path.read_text()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def test_injected_tasks_stored_run_and_completed(server: Server, client: httpx.Client) -> None:
    response = client.post("/notify/ada")
    assert response.status_code == 200
    first, second = response.json()["jobs"]
    server.wait_states({first: "completed", second: "completed"})
    lines = server.effect_lines()
    assert lines.index("hello ada") < lines.index("ada!")
    results = read_db(
        server.db, "SELECT id, task, result FROM afterward_jobs WHERE id IN (?, ?)", (first, second)
    )
    by_id = {r["id"]: (r["task"], json.loads(r["result"])) for r in results}
    assert by_id == {
        first: ("tests.apps.dropin_app:write_effect", "HELLO ADA"),
        second: ("tests.apps.dropin_app:awrite_effect", {"wrote": "ada!"}),
    }


@pytest.mark.parametrize("how", ["parameter", "hand"])
def test_job_row_exists_when_the_response_headers_arrive(
    server: Server, client: httpx.Client, how: str
) -> None:
    key = f"gate-{how}"
    with client.stream("GET", f"/stream/{how}/{key}") as response:
        assert response.status_code == 200
        job = response.headers["x-job"]
        # Headers are here, the body is held open by the server: the job must already be
        # in the file, claimed by the server and not yet run.
        assert server.state(job) == "running"
        assert f"stream {key}" not in server.effect_lines()
        (server.gates / key).touch()
        assert response.read() == b"started;finished"
    server.wait_states({job: "completed"})
    assert f"stream {key}" in server.effect_lines()


def test_endpoint_and_middleware_tasks_both_run(server: Server, client: httpx.Client) -> None:
    response = client.post("/audited/bo")
    assert response.status_code == 200
    endpoint_job, audit_job = response.json()["job"], response.headers["x-audit-job"]
    server.wait_states({endpoint_job: "completed", audit_job: "completed"})
    lines = server.effect_lines()
    assert "endpoint bo" in lines
    assert "audit /audited/bo" in lines


def test_failed_chain_step_cancels_the_rest(server: Server, client: httpx.Client) -> None:
    ids = client.post("/chain/cy").json()
    server.wait_states({ids[0]: "completed", ids[1]: "discarded", ids[2]: "cancelled"})
    (row,) = read_db(server.db, "SELECT errors FROM afterward_jobs WHERE id = ?", (ids[2],))
    assert ids[1] in json.loads(row["errors"])[-1]["error"]
    lines = server.effect_lines()
    assert "chain cy 1" in lines
    assert "chain cy 3" not in lines


def test_unstorable_jobs_answer_500_never_2xx(server: Server, client: httpx.Client) -> None:
    with closing(sqlite3.connect(server.db, timeout=10)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse_inserts BEFORE INSERT ON afterward_jobs "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        conn.commit()
    try:
        for path in ["/notify/dee", "/stream/hand/never", "/audited/dee"]:
            response = client.request("GET" if path.startswith("/stream") else "POST", path)
            assert response.status_code == 500, (path, response.status_code, response.text)
    finally:
        with closing(sqlite3.connect(server.db, timeout=10)) as conn:
            conn.execute("DROP TRIGGER refuse_inserts")
            conn.commit()
    after = client.post("/notify/eve")
    assert after.status_code == 200
    server.wait_states(dict.fromkeys(after.json()["jobs"], "completed"))
    lines = server.effect_lines()
    assert "hello eve" in lines
    assert not [line for line in lines if "dee" in line or "never" in line]
