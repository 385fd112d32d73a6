"""Shared fixtures: one fresh store per test (its own SQLite file), on every backend."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from afterward import Afterward
from afterward.app import set_default_afterward
from afterward.config import EnvSettings
from afterward.storage._wakeup import clear_dead_sockets
from afterward.testing import FakeClock

BACKENDS = ["memory", "sqlite"]


def _wakeup_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"afterward-{os.getuid()}-*")))


@pytest.fixture(scope="session", autouse=True)
def _sweep_wakeup_folders() -> Iterator[None]:
    """Remove the wake-up folders that workers killed with ``kill -9`` left behind.

    A killed worker cannot remove its socket, and each test's database is new, so no later
    listener of that database clears it. Only folders that appeared during this session
    are looked at, and only sockets nobody listens on any more are removed.
    """
    before = _wakeup_folders()
    yield
    for folder in _wakeup_folders() - before:
        clear_dead_sockets(folder)
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # not empty: someone still listens there


def url_for(backend: str, tmp_path: Path) -> str:
    """A storage URL private to one test."""
    if backend == "memory":
        return "memory://"
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn (mark-select with -k memory / -k sqlite)."""
    return url_for(str(request.param), tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file private to this test."""
    return url_for("sqlite", tmp_path)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock that moves only when told."""
    return FakeClock()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[type[Afterward]]:
    """Build ``Afterward`` objects that are closed when the test ends."""
    made: list[Afterward] = []

    class _Tracked(Afterward):
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.setdefault("env", EnvSettings())
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield _Tracked
    for app in made:
        app.close()


@pytest.fixture
def default_app(tmp_path: Path) -> Iterator[Afterward]:
    """Make the process-wide default (used by zero-config code) a private SQLite file."""
    app = Afterward(url_for("sqlite", tmp_path), env=EnvSettings())
    previous = set_default_afterward(app)
    yield app
    set_default_afterward(previous)
    app.close()
