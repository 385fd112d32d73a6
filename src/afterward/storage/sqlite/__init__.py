"""The embedded SQLite backend: the default, durable with no set-up."""

from afterward.storage.sqlite._backend import SQLiteStorage

__all__ = ["SQLiteStorage"]
