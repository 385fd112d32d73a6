"""Load named SQL: a ``.sql`` file of blocks headed ``-- name: <name> --``.

The line after each header is a one-line ``--`` comment saying what the query is for.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_migrations", "load_queries"]

_HEADER = re.compile(r"^-- name: (\w+) --\s*$", re.M)


def load_queries(package: str, filename: str) -> dict[str, str]:
    """Map each query name in ``package/filename`` to its SQL text."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        if not lines or not lines[0].startswith("--"):
            raise ValueError(f"query {name!r} in {filename} needs a one-line purpose comment")
        queries[name] = "\n".join(lines[1:]).strip().rstrip(";")
    return queries


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """The numbered migrations in ``package`` as (number, name, SQL), in order."""
    found = []
    for entry in resources.files(package).iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    return found
