"""``Afterward.enqueue_many`` stores N no-op jobs in calls of 1,000, as ``run.py``'s bulk phase.

usage: count_bulk.py N      (run under valgrind by ``bench/count.py``)

The storage is a fresh SQLite file in a temporary folder; one job is enqueued first, so
opening the database and creating its tables are not part of the difference.
"""

import shutil
import sys
import tempfile

from afterward import Afterward, Call

CHUNK = 1_000


def noop(ts: float) -> None:
    pass


def main() -> None:
    n = int(sys.argv[1])
    folder = tempfile.mkdtemp(prefix="aw_count_")
    try:
        aw = Afterward(f"sqlite:///{folder}/jobs.db", worker="off")
        aw.enqueue(noop, -1.0)
        for i in range(0, n, CHUNK):
            aw.enqueue_many([Call(noop, 0.0) for _ in range(min(CHUNK, n - i))])
        aw.storage.close_sync()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("ok")


if __name__ == "__main__":
    main()
