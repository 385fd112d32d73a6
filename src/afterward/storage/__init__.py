"""Storage backends, chosen by URL scheme; each is imported only when its URL is used."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from afterward.errors import ConfigurationError
from afterward.storage.base import Storage

__all__ = ["DEFAULT_URL", "Storage", "storage_from_url"]

#: The default: a SQLite file named ``afterward.db`` in the current working directory.
DEFAULT_URL = "sqlite:///afterward.db"


def storage_from_url(url: str) -> Storage:
    """Build the backend a URL names: ``sqlite:///path.db``, ``sqlite:////abs/path.db``, ``memory://``.

    SQLite options go in the query string: ``?durability=full`` (survive power loss, fsync
    per commit) and ``?busy_timeout=5`` (seconds).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from afterward.storage.memory import MemoryStorage

        return MemoryStorage()
    if scheme == "sqlite":
        path = unquote(parts.path)
        path = path[1:] if path.startswith("/") else path
        if parts.netloc or not path:
            raise ConfigurationError(
                f"AFTERWARD_URL={url!r} names no file; write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        opts = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        durability = opts.pop("durability", "normal")
        if durability not in ("normal", "full"):
            raise ConfigurationError(
                f"durability={durability!r} in {url!r} is not known; use 'normal' (survives "
                "kill -9) or 'full' (also survives power loss)"
            )
        try:
            busy = float(opts.pop("busy_timeout", "5"))
        except ValueError:
            raise ConfigurationError(f"busy_timeout in {url!r} must be seconds, e.g. 5") from None
        if opts:
            raise ConfigurationError(
                f"unknown option(s) {sorted(opts)} in {url!r}; known: durability, busy_timeout"
            )
        from afterward.storage.sqlite import SQLiteStorage

        return SQLiteStorage(path, durability=durability, busy_timeout=busy)
    raise ConfigurationError(
        f"AFTERWARD_URL={url!r} has no backend for scheme {scheme!r}; use sqlite:///path.db "
        "or memory://"
    )
