"""Settings read from the environment, each checked when the application starts.

=========================  ===========================================================
``AFTERWARD_URL``          storage URL (default ``sqlite:///afterward.db`` in the cwd)
``AFTERWARD_STRICT``       ``1``: refuse tasks that could only run in-process
``AFTERWARD_WORKER``       ``auto`` (default): run a worker in each web process;
                           ``off``: only store, leave running to ``afterward worker``
``AFTERWARD_CONCURRENCY``  jobs one worker runs at once (default 32)
``AFTERWARD_LEASE``        seconds a claim lasts without a heartbeat (default 30)
``AFTERWARD_ALLOW``        comma-separated packages whose functions a worker may run
``AFTERWARD_GC_FREEZE``    ``0``: do not freeze the start-up heap (``gc.freeze``) when
                           a worker or web app starts (default on; see ``Afterward``)
=========================  ===========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from afterward.errors import ConfigurationError

__all__ = ["EnvSettings"]


def _flag(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name}={raw!r} is not a boolean; use 1 or 0")


def _number(env: Mapping[str, str], name: str, kind: type[float] | type[int]) -> float | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number; e.g. {name}=30") from None
    if value <= 0:
        raise ConfigurationError(f"{name}={raw!r} must be greater than 0")
    return value


@dataclass(frozen=True, slots=True)
class EnvSettings:
    """What the environment says; ``None`` where it says nothing."""

    url: str | None = None
    strict: bool | None = None
    worker: str | None = None
    concurrency: int | None = None
    lease_seconds: float | None = None
    allow: tuple[str, ...] = ()
    gc_freeze: bool | None = None

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> EnvSettings:
        """Read and check the ``AFTERWARD_*`` variables."""
        env = os.environ if env is None else env
        worker = env.get("AFTERWARD_WORKER") or None
        if worker is not None and worker not in ("auto", "off"):
            raise ConfigurationError(f"AFTERWARD_WORKER={worker!r}: use 'auto' or 'off'")
        concurrency = _number(env, "AFTERWARD_CONCURRENCY", int)
        allow = tuple(p.strip() for p in env.get("AFTERWARD_ALLOW", "").split(",") if p.strip())
        return cls(
            url=env.get("AFTERWARD_URL") or None,
            strict=_flag(env, "AFTERWARD_STRICT"),
            worker=worker,
            concurrency=int(concurrency) if concurrency is not None else None,
            lease_seconds=_number(env, "AFTERWARD_LEASE", float),
            allow=allow,
            gc_freeze=_flag(env, "AFTERWARD_GC_FREEZE"),
        )
