"""Cross-process wake-up for one database on one host: a datagram per commit, not polling.

Each listening worker binds a Unix datagram socket in a directory named after the database;
a producer that committed new work sends one byte to every socket there. A full socket buffer
means that worker is already awake, so nothing blocks. A socket nobody listens on any more
(its process died) is removed by the next producer that finds it or listener that starts, and
the directory by whoever leaves it empty.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import socket
import tempfile
from collections.abc import Callable

__all__ = ["WakeChannel", "clear_dead_sockets"]

_BIND_ATTEMPTS = 5


class WakeChannel:
    """Wake-ups among the processes sharing one database file."""

    def __init__(self, key: str) -> None:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:16]
        # Short on purpose: Unix socket paths are limited to 107 bytes.
        self.directory = os.path.join(tempfile.gettempdir(), f"afterward-{os.getuid()}-{digest}")
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._version = -1

    def notify(self) -> None:
        """Wake every worker listening on this database; never blocks."""
        # The directory's mtime changes whenever a worker binds or a stale socket is
        # removed, so one stat() tells whether the cached list of listeners is still right.
        try:
            version = os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return
        if version != self._version:
            self._peers = [
                os.path.join(self.directory, n)
                for n in os.listdir(self.directory)
                if n.endswith(".sock")
            ]
            self._version = version
        if not self._peers:
            return
        if self._sender is None:
            self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sender.setblocking(False)
        anyone = False
        for path in self._peers:
            try:
                self._sender.sendto(b"!", path)
                anyone = True
            except BlockingIOError:
                anyone = True  # its buffer is full of wake-ups it has not read: it is awake
            except (ConnectionRefusedError, FileNotFoundError):
                _forget(path)  # its listener is gone
                self._version = -1
            except OSError:
                anyone = True
                self._version = -1
        if not anyone:
            # Every listener had died without stopping (kill -9): clear up as the last one
            # out would have.
            self._remove_if_empty()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on the running loop at each wake-up; returns the stop function."""
        loop = asyncio.get_running_loop()
        pid = os.getpid()
        path = os.path.join(self.directory, f"{pid}-{os.urandom(4).hex()}.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            self._bind(sock, path)
        except BaseException:
            sock.close()
            raise
        self._clear_dead(keep=path)

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                for _ in range(1024):
                    sock.recv(64)
            callback()

        loop.add_reader(sock.fileno(), readable)

        def leave() -> None:
            if os.getpid() != pid:  # a forked child exiting: the socket is its parent's
                return
            _forget(path)
            # The last listener out removes the directory, else every database a test suite
            # ever made (one per test) left an empty one behind in /tmp.
            self._remove_if_empty()

        def stop() -> None:
            atexit.unregister(leave)
            with contextlib.suppress(Exception):
                loop.remove_reader(sock.fileno())
            sock.close()
            leave()

        # A worker started on first use runs in a daemon thread that nobody stops when the
        # server exits (uvicorn on SIGTERM, with no lifespan): its socket would stay behind.
        atexit.register(leave)
        return stop

    def _clear_dead(self, keep: str) -> None:
        # Workers killed with kill -9 leave their sockets; producers remove those only as
        # they send to them, and a process that stores only its own work never sends. So
        # each new listener clears them.
        clear_dead_sockets(self.directory, keep)

    def _remove_if_empty(self) -> None:
        # Not empty: other workers still listen, or one bound meanwhile; it stays.
        with contextlib.suppress(OSError):
            os.rmdir(self.directory)

    def _bind(self, sock: socket.socket, path: str) -> None:
        # Another process's last listener may remove the directory between our makedirs and
        # bind; make it again. Each retry means that process got there in between.
        for attempt in range(_BIND_ATTEMPTS):
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            try:
                sock.bind(path)
                return
            except FileNotFoundError:
                if attempt == _BIND_ATTEMPTS - 1:
                    raise

    def close(self) -> None:
        """Close the sending socket."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None


def clear_dead_sockets(directory: str, keep: str | None = None) -> None:
    """Remove the sockets in ``directory`` that nobody listens on any more (but ``keep``).

    ``connect()`` to a socket nobody reads is refused at once, and sends nothing to the
    ones that are alive.
    """
    with contextlib.suppress(OSError):
        names = os.listdir(directory)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with probe:
            for name in names:
                other = os.path.join(directory, name)
                if other == keep or not name.endswith(".sock"):
                    continue
                try:
                    probe.connect(other)
                except (ConnectionRefusedError, FileNotFoundError):
                    _forget(other)
                except OSError:
                    pass


def _forget(path: str) -> None:
    """Remove a socket file nobody reads (or that is already gone)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
