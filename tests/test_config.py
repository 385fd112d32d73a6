"""Settings from the environment and the constructor: each bad value is refused at start-up
with a message naming the variable and what to write instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from afterward import Afterward
from afterward.config import EnvSettings
from afterward.errors import ConfigurationError


def test_nothing_set_means_every_default() -> None:
    assert EnvSettings.read({}) == EnvSettings()
    blank = dict.fromkeys(("AFTERWARD_URL", "AFTERWARD_STRICT", "AFTERWARD_WORKER"), "")
    assert EnvSettings.read(blank | {"AFTERWARD_CONCURRENCY": "", "AFTERWARD_LEASE": ""}) == (
        EnvSettings()
    )


def test_every_variable_is_read() -> None:
    env = {
        "AFTERWARD_URL": "sqlite:///jobs.db",
        "AFTERWARD_STRICT": "yes",
        "AFTERWARD_WORKER": "off",
        "AFTERWARD_CONCURRENCY": "8",
        "AFTERWARD_LEASE": "12.5",
        "AFTERWARD_ALLOW": " myapp, other.pkg ,,",
        "UNRELATED": "ignored",
    }
    assert EnvSettings.read(env) == EnvSettings(
        url="sqlite:///jobs.db",
        strict=True,
        worker="off",
        concurrency=8,
        lease_seconds=12.5,
        allow=("myapp", "other.pkg"),
    )
    assert EnvSettings.read({"AFTERWARD_STRICT": "0"}).strict is False


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"AFTERWARD_STRICT": "maybe"}, ["AFTERWARD_STRICT='maybe'", "use 1 or 0"]),
        ({"AFTERWARD_WORKER": "always"}, ["AFTERWARD_WORKER='always'", "'auto' or 'off'"]),
        (
            {"AFTERWARD_CONCURRENCY": "lots"},
            ["AFTERWARD_CONCURRENCY='lots'", "AFTERWARD_CONCURRENCY=30"],
        ),
        ({"AFTERWARD_CONCURRENCY": "2.5"}, ["AFTERWARD_CONCURRENCY='2.5'", "not a number"]),
        ({"AFTERWARD_CONCURRENCY": "0"}, ["AFTERWARD_CONCURRENCY='0'", "greater than 0"]),
        ({"AFTERWARD_LEASE": "-3"}, ["AFTERWARD_LEASE='-3'", "greater than 0"]),
        ({"AFTERWARD_LEASE": "soon"}, ["AFTERWARD_LEASE='soon'", "e.g."]),
    ],
)
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        EnvSettings.read(env)
    for text in names:
        assert text in str(info.value)


def test_the_environment_configures_an_application(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    env = EnvSettings.read(
        {"AFTERWARD_URL": url, "AFTERWARD_WORKER": "off", "AFTERWARD_LEASE": "7"}
    )
    app = Afterward(env=env)
    try:
        assert app.url == url
        assert app.worker_mode == "off"
        assert not app.run_after_response
        assert app.worker_settings.lease_seconds == 7
        # Arguments win over the environment.
        assert Afterward("memory://", worker="auto", env=env).worker_mode == "auto"
    finally:
        app.close()


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"worker": "sometimes"}, "worker='sometimes'"),
        ({"max_payload_bytes": 0}, "max_payload_bytes=0"),
        ({"max_attempts": 0}, "max_attempts=0"),
        ({"timeout": -1}, "timeout=-1"),
        ({"url": "redis://localhost"}, "'redis'"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs: dict[str, object], text: str) -> None:
    kwargs.setdefault("url", "memory://")
    with pytest.raises(ConfigurationError, match=None) as info:
        Afterward(env=EnvSettings(), **kwargs)  # type: ignore[arg-type]
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("setting", "frozen"),
    [("", True), ("gc_freeze=False", False), ("env:0", False), ("env:1", True)],
)
def test_the_startup_heap_is_frozen_once_unless_turned_off(
    tmp_path: Path, setting: str, frozen: bool
) -> None:
    """Starting the app moves the start-up heap out of the cycle collector's reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFTERWARD_")}
    kwargs = ""
    if setting.startswith("env:"):
        env["AFTERWARD_GC_FREEZE"] = setting[4:]
    else:
        kwargs = setting
    code = f"""
import asyncio, gc
from afterward import Afterward
aw = Afterward("sqlite:///{tmp_path / "j.db"}", {kwargs})
counts = [gc.get_freeze_count()]
async def main():
    for _ in range(2):  # a second start does not collect and freeze again
        async with aw.running():
            pass
        counts.append(gc.get_freeze_count())
asyncio.run(main())
print(*counts)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    before, first, second = map(int, out.stdout.split())
    assert before == 0
    assert (first > 0) is frozen
    assert second == first
