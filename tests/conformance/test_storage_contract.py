"""The storage contract (``afterward.storage.base``), run against every backend.

Covers atomic inserts, claim order and filters, chains, fencing by lease token, retry and
dead letters, release, heartbeats, rescue of lost leases, cancel, and the read, prune and
delete calls. Every state change these tests cause is checked against ``TRANSITIONS`` by
the harness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import EllipsisType

import pytest

from afterward.errors import StorageError
from afterward.jobs import Job, JobState, NewJob
from afterward.storage.base import JobComplete
from tests.conformance._harness import LEASE, T0, Store, new

S = JobState


# -- insert -------------------------------------------------------------------------------


def test_insert_many_is_all_or_nothing_on_a_duplicate_id(store: Store) -> None:
    store.insert([new("a")])
    with pytest.raises(StorageError):
        store.insert([new("b"), new("c"), new("a")])
    with pytest.raises(StorageError):
        store.insert([new("d"), new("d")])
    assert [j.id for j in store.listed()] == ["a"]
    assert store.find("b") is None
    assert store.find("d") is None


# A timeout stores every column, which SQLite inserts with statements of their own.
@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_insert_sets_the_state_from_run_at_and_owner(store: Store, timeout: float | None) -> None:
    store.insert(
        [
            new("due", run_at=T0, timeout=timeout),
            new("later", run_at=T0 + 60, timeout=timeout),
            new("waits", run_at=None, timeout=timeout),
            new("mine", owner="web-1", lease_expires_at=T0 + LEASE, timeout=timeout),
        ]
    )
    assert store.get("due").state is S.AVAILABLE
    assert store.get("later").state is S.SCHEDULED
    assert store.get("waits").state is S.SCHEDULED
    mine = store.get("mine")
    assert (mine.state, mine.attempt, mine.lease_token) == (S.RUNNING, 1, 1)
    assert (mine.lease_owner, mine.lease_expires_at, mine.attempted_at) == (
        "web-1",
        T0 + LEASE,
        T0,
    )
    fresh = store.get("due")
    assert (fresh.attempt, fresh.lease_token, fresh.errors, fresh.created_at) == (0, 0, (), T0)


def _varied(i: int, timeout: float | None) -> NewJob:
    held = i % 4 == 0
    return new(
        f"j{i:03d}",
        payload=f'{{"args":[{i}],"kwargs":{{}}}}',
        queue=f"q{i % 3}",
        priority=i % 5,
        max_attempts=1 + i % 7,
        timeout=timeout,
        run_at=T0 + (i % 2) * 60,
        chain_next=f"next-{i}" if i % 9 == 0 else None,
        owner="web-1" if held else None,
        lease_expires_at=T0 + LEASE + i if held else None,
    )


# SQLite stores a long insert a hundred rows a statement and the rest row by row: 250 jobs
# cover both, for each of its four insert statements (held or not, timeout or not).
@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_a_long_insert_stores_every_job_with_its_own_fields(
    store: Store, timeout: float | None
) -> None:
    jobs = [_varied(i, timeout) for i in range(250)]
    store.insert(jobs)
    assert sum(store.count().values()) == 250
    for n in jobs:
        got = store.get(n.id)
        assert (got.payload, got.queue, got.priority, got.max_attempts, got.timeout) == (
            n.payload,
            n.queue,
            n.priority,
            n.max_attempts,
            n.timeout,
        )
        assert (got.run_at, got.chain_next, got.lease_owner, got.lease_expires_at) == (
            n.run_at,
            n.chain_next,
            n.owner,
            n.lease_expires_at,
        )
        if n.owner is not None:
            expected = S.RUNNING
        else:
            expected = S.AVAILABLE if n.run_at is not None and n.run_at <= T0 else S.SCHEDULED
        assert got.state is expected, n.id


def test_a_long_insert_is_all_or_nothing_too(store: Store) -> None:
    ids = [f"d{i:03d}" for i in range(250)]
    ids[120] = "d050"  # in SQLite, a statement after the first has the duplicate
    with pytest.raises(StorageError):
        store.insert([new(i) for i in ids])
    assert store.listed() == []


# -- claim --------------------------------------------------------------------------------


def test_claim_takes_highest_priority_then_oldest_run_at_then_id(store: Store) -> None:
    store.insert(
        [
            new("e", priority=0, run_at=T0 - 5),
            new("c", priority=5, run_at=T0 - 1),
            new("b", priority=5, run_at=T0 - 1),
            new("a", priority=5, run_at=T0 - 2),
            new("d", priority=1, run_at=T0),
        ]
    )
    first = store.claim(limit=2)
    rest = [store.claim_one().id for _ in range(3)]
    assert [j.id for j in first] + rest == ["a", "b", "c", "d", "e"]


def test_claim_counts_an_attempt_and_bumps_the_lease_token(store: Store) -> None:
    store.insert([new("a", max_attempts=3)])
    job = store.claim_one("w1", now=T0 + 2)
    assert (job.state, job.attempt, job.lease_token) == (S.RUNNING, 1, 1)
    assert (job.lease_owner, job.lease_expires_at, job.attempted_at) == (
        "w1",
        T0 + 2 + LEASE,
        T0 + 2,
    )
    assert store.get("a") == job
    assert store.fail(job, now=T0 + 3, retry_at=T0 + 4)
    again = store.claim_one("w2", now=T0 + 4)
    assert (again.attempt, again.lease_token, again.lease_owner) == (2, 2, "w2")
    # What a claim hands back is what storage now holds, the first failure included.
    assert len(again.errors) == 1
    assert store.get("a") == again


def test_claim_respects_run_at_queues_and_limit(store: Store) -> None:
    store.insert(
        [
            new("later", run_at=T0 + 10),
            new("mail1", queue="mail"),
            new("mail2", queue="mail"),
            new("pay", queue="payments"),
        ]
    )
    assert store.claim(now=T0, queues=("other",), limit=10) == []
    mail = store.claim(now=T0, queues=("mail",), limit=1)
    assert [j.id for j in mail] == ["mail1"]
    rest = store.claim(now=T0, limit=10)
    assert sorted(j.id for j in rest) == ["mail2", "pay"]
    assert store.claim(now=T0 + 9.9, limit=10) == []
    assert [j.id for j in store.claim(now=T0 + 10, limit=10)] == ["later"]


def test_claim_never_takes_running_or_finished_jobs(store: Store) -> None:
    store.insert([new("a"), new("b")])
    a = store.claim_one()
    store.complete(store.claim_one())
    assert store.claim(now=T0 + 1_000, limit=10) == []
    assert store.get(a.id).lease_token == 1


# -- chains -------------------------------------------------------------------------------


def chain(store: Store, *ids: str, **fields: object) -> None:
    """Insert a chain: the first step due at T0, each later one waiting for its predecessor."""
    store.insert(
        [
            new(
                job_id,
                run_at=T0 if i == 0 else None,
                chain_next=ids[i + 1] if i + 1 < len(ids) else None,
                **fields,
            )
            for i, job_id in enumerate(ids)
        ]
    )


@pytest.mark.parametrize("known", [False, True], ids=["read-back", "chain-next-given"])
def test_chain_step_waits_until_the_step_before_completes(store: Store, known: bool) -> None:
    chain(store, "a", "b")
    assert store.get("b").run_at is None
    a = store.claim_one(now=T0)
    assert store.claim(now=T0 + 10_000, limit=10) == []
    assert store.complete(a, now=T0 + 5, result='"ok"', known=known) == (True, None)
    b = store.get("b")
    assert (b.state, b.run_at) == (S.AVAILABLE, T0 + 5)
    assert store.claim_one(now=T0 + 5).id == "b"


def test_complete_with_next_owner_claims_the_next_step_for_it(store: Store) -> None:
    chain(store, "a", "b", "c")
    a = store.claim_one("w1")
    ok, b = store.complete(a, now=T0 + 5, next_owner="w1")
    assert ok
    assert b is not None
    assert (b.id, b.state, b.attempt, b.lease_token) == ("b", S.RUNNING, 1, 1)
    assert (b.lease_owner, b.lease_expires_at, b.run_at) == ("w1", T0 + 5 + LEASE, T0 + 5)
    assert store.get("b") == b
    assert store.get("c").state is S.SCHEDULED
    ok, c = store.complete(b, now=T0 + 6, next_owner="w1")
    assert ok
    assert c is not None
    assert c.id == "c"
    assert store.complete(c, now=T0 + 7, next_owner="w1") == (True, None)
    assert [store.get(i).state for i in "abc"] == [S.COMPLETED] * 3


def test_complete_records_result_and_clears_the_lease(store: Store) -> None:
    store.insert([new("a")])
    a = store.claim_one()
    assert store.complete(a, now=T0 + 3, result='{"n":1}') == (True, None)
    done = store.get("a")
    assert (done.state, done.result, done.finished_at) == (S.COMPLETED, '{"n":1}', T0 + 3)
    assert (done.lease_owner, done.lease_expires_at) == (None, None)
    assert store.complete(a, now=T0 + 4) == (False, None)
    assert store.get("a") == done


@pytest.mark.parametrize("returned", [True, False], ids=["results", "no-results"])
@pytest.mark.parametrize("known", [False, True], ids=["read-back", "chain-next-given"])
def test_completions_made_together_each_get_their_own_outcome(
    store: Store, known: bool, returned: bool
) -> None:
    """Backends may store completions of one moment together; each caller still learns
    its own outcome: results, a chain's next step, and a stale token refused. Callers that
    pass each job's ``chain_next`` (as the executor does) learn the same, and so do jobs
    that returned nothing (no result to store)."""
    store.insert([new(i) for i in ("p", "q", "stale")])
    chain(store, "a", "b")
    jobs = {j.id: j for j in store.claim(limit=10)}
    assert set(jobs) == {"p", "q", "stale", "a"}
    store.complete(jobs["stale"], now=T0 + 1)  # already completed: a repeat is refused

    def nxt(job_id: str) -> str | EllipsisType | None:
        return jobs[job_id].chain_next if known else ...

    p_result, q_result = ('"P"', '"Q"') if returned else (None, None)
    calls = [
        JobComplete("p", jobs["p"].lease_token, T0 + 2, p_result, None, None, nxt("p")),
        JobComplete("a", jobs["a"].lease_token, T0 + 2, None, "w1", T0 + 2 + LEASE, nxt("a")),
        JobComplete("stale", jobs["stale"].lease_token, T0 + 2, None, None, None, nxt("stale")),
        JobComplete("q", jobs["q"].lease_token, T0 + 3, q_result, None, None, nxt("q")),
    ]

    async def together() -> list[tuple[bool, Job | None]]:
        return list(await asyncio.gather(*(store.storage.job_complete(c) for c in calls)))

    (p_ok, p_next), (a_ok, b), stale, (q_ok, q_next) = store.run(together())
    assert (p_ok, p_next, a_ok, q_ok, q_next) == (True, None, True, True, None)
    assert stale == (False, None)
    assert b is not None
    assert (b.id, b.state, b.lease_owner) == ("b", S.RUNNING, "w1")
    assert (store.get("p").result, store.get("p").finished_at) == (p_result, T0 + 2)
    assert (store.get("q").result, store.get("q").finished_at) == (q_result, T0 + 3)
    assert store.get("stale").finished_at == T0 + 1


# -- fencing ------------------------------------------------------------------------------

Change = Callable[[Store, Job], object]
STALE_CHANGES: dict[str, tuple[Change, object]] = {
    "complete": (lambda s, j: s.complete(j, now=T0 + 50), (False, None)),
    "complete-next": (lambda s, j: s.complete(j, now=T0 + 50, next_owner="w1"), (False, None)),
    "complete-known": (lambda s, j: s.complete(j, now=T0 + 50, known=True), (False, None)),
    "complete-next-known": (
        lambda s, j: s.complete(j, now=T0 + 50, next_owner="w1", known=True),
        (False, None),
    ),
    "fail-retry": (lambda s, j: s.fail(j, now=T0 + 50, retry_at=T0 + 60), False),
    "fail-final": (lambda s, j: s.fail(j, now=T0 + 50), False),
    "fail-cancel": (lambda s, j: s.fail(j, now=T0 + 50, final_state=S.CANCELLED), False),
    "release": (lambda s, j: s.release(j, now=T0 + 50), False),
    "heartbeat": (lambda s, j: s.heartbeat("w1", [(j.id, j.lease_token)], T0 + 500), set()),
}


@pytest.mark.parametrize("change", sorted(STALE_CHANGES))
def test_a_stale_lease_token_changes_nothing(store: Store, change: str) -> None:
    chain(store, "a", "b", max_attempts=5)
    stale = store.claim_one("w1", now=T0)
    assert store.rescue(now=T0 + LEASE + 1).retried == ["a"]
    current = store.claim_one("w2", now=T0 + LEASE + 1)
    assert current.lease_token == stale.lease_token + 1
    before = {j.id: j for j in store.listed()}
    do, refused = STALE_CHANGES[change]
    assert do(store, stale) == refused
    assert {j.id: j for j in store.listed()} == before
    # The current holder's changes still go through.
    assert store.complete(current, now=T0 + 50) == (True, None)


@pytest.mark.parametrize("change", sorted(STALE_CHANGES))
def test_changes_to_a_job_that_is_not_running_are_refused(store: Store, change: str) -> None:
    store.insert([new("a")])
    a = store.claim_one()
    assert store.complete(a)[0]
    before = store.get("a")
    do, refused = STALE_CHANGES[change]
    assert do(store, a) == refused
    assert store.get("a") == before


# -- failure, retry, dead letters -----------------------------------------------------------


def test_fail_with_retry_at_makes_the_job_retryable_and_appends_the_error(store: Store) -> None:
    store.insert([new("a", max_attempts=3)])
    a = store.claim_one(now=T0)
    assert store.fail(a, now=T0 + 1, retry_at=T0 + 7, message="first")
    job = store.get("a")
    assert (job.state, job.run_at, job.attempt) == (S.RETRYABLE, T0 + 7, 1)
    assert (job.lease_owner, job.lease_expires_at, job.finished_at) == (None, None, None)
    assert store.claim(now=T0 + 6.9) == []
    a2 = store.claim_one(now=T0 + 7)
    assert store.fail(a2, now=T0 + 8, retry_at=T0 + 9, message="second")
    assert [e["error"] for e in store.get("a").errors] == ["first", "second"]
    assert store.get("a").error == {"error": "second", "at": T0 + 8}


@pytest.mark.parametrize("final", [S.DISCARDED, S.CANCELLED])
def test_final_failure_ends_the_job_and_cancels_the_rest_of_its_chain(
    store: Store, final: JobState
) -> None:
    chain(store, "a", "b", "c")
    a = store.claim_one()
    assert store.fail(a, now=T0 + 2, message="fatal", final_state=final)
    ended = store.get("a")
    assert (ended.state, ended.finished_at) == (final, T0 + 2)
    assert ended.error is not None
    assert ended.error["error"] == "fatal"
    for step in ("b", "c"):
        job = store.get(step)
        assert (job.state, job.finished_at) == (S.CANCELLED, T0 + 2)
        assert job.error is not None
        assert job.error["error"] == f"cancelled: chain step a ended {final.value}"
    assert store.claim(now=T0 + 10_000, limit=10) == []


def test_discarded_jobs_are_kept_as_dead_letters(store: Store) -> None:
    store.insert([new("a", max_attempts=1)])
    assert store.fail(store.claim_one(), now=T0 + 1)
    assert store.count()[S.DISCARDED] == 1
    assert [j.id for j in store.listed(S.DISCARDED)] == ["a"]


# -- release and heartbeat ----------------------------------------------------------------


def test_release_gives_the_job_back_and_returns_the_attempt(store: Store) -> None:
    store.insert([new("a")])
    a = store.claim_one("w1", now=T0)
    assert store.release(a, now=T0 + 3)
    job = store.get("a")
    assert (job.state, job.attempt, job.run_at) == (S.AVAILABLE, 0, T0 + 3)
    assert (job.lease_owner, job.lease_expires_at) == (None, None)
    again = store.claim_one("w2", now=T0 + 3)
    assert (again.attempt, again.lease_token) == (1, 2)


def test_heartbeat_extends_only_the_leases_the_owner_still_holds(store: Store) -> None:
    store.insert([new("a"), new("b"), new("c"), new("d")])
    a, b = store.claim("w1", limit=2)
    c = store.claim_one("w2")
    held = store.heartbeat(
        "w1", [(a.id, a.lease_token), (b.id, b.lease_token + 7), (c.id, c.lease_token)], T0 + 99
    )
    assert held == {a.id}
    assert store.get(a.id).lease_expires_at == T0 + 99
    assert store.get(b.id).lease_expires_at == T0 + LEASE
    assert store.get(c.id).lease_expires_at == T0 + LEASE
    assert store.heartbeat("w1", [("d", 0), ("missing", 1)], T0 + 99) == set()
    assert store.get("d").lease_expires_at is None


# -- rescue -------------------------------------------------------------------------------


def test_rescue_retries_expired_leases_now_and_discards_last_attempts(store: Store) -> None:
    store.insert([new("a", max_attempts=2), new("b", max_attempts=1), new("c", max_attempts=2)])
    a, b = store.claim("w1", now=T0, limit=2, lease=10)
    c = store.claim_one("w2", now=T0 + 5)
    result = store.rescue(now=T0 + 11)
    assert (result.retried, result.discarded) == ([a.id], [b.id])
    ra = store.get(a.id)
    assert (ra.state, ra.run_at, ra.attempt, ra.lease_owner) == (S.RETRYABLE, T0 + 11, 1, None)
    assert ra.error is not None
    assert "lease expired" in ra.error["error"]
    rb = store.get(b.id)
    assert (rb.state, rb.finished_at) == (S.DISCARDED, T0 + 11)
    assert rb.error is not None
    assert "lease expired" in rb.error["error"]
    assert store.get(c.id) == c
    assert store.claim_one(now=T0 + 11).id == a.id


def test_rescue_takes_jobs_of_dead_owners_even_with_a_live_lease(store: Store) -> None:
    store.insert([new("a"), new("b")])
    a = store.claim_one("dead-owner")
    b = store.claim_one("alive")
    result = store.rescue(now=T0 + 1, dead_owners=["dead-owner"])
    assert (result.retried, result.discarded) == ([a.id], [])
    job = store.get(a.id)
    assert job.state is S.RETRYABLE
    assert job.error is not None
    assert "worker died" in job.error["error"]
    assert store.get(b.id) == b
    assert store.rescue(now=T0 + 2).retried == []


def test_rescue_of_a_chain_step_on_its_last_attempt_cancels_the_rest(store: Store) -> None:
    chain(store, "a", "b", max_attempts=1)
    store.claim_one(now=T0)
    assert store.rescue(now=T0 + LEASE + 1).discarded == ["a"]
    assert store.get("b").state is S.CANCELLED


# -- cancel -------------------------------------------------------------------------------


def test_cancel_only_stops_jobs_that_have_not_started(store: Store) -> None:
    store.insert(
        [
            new("available"),
            new("scheduled", run_at=T0 + 60),
            new("running"),
            new("done"),
            new("retryable"),
        ]
    )
    # Equal priority and run time: claims go by id, so "available" is taken alone first.
    assert store.claim_one().id == "available"
    jobs = {j.id: j for j in store.claim(now=T0, limit=3)}
    assert set(jobs) == {"done", "retryable", "running"}
    assert store.complete(jobs["done"])[0]
    assert store.fail(jobs["retryable"], retry_at=T0 + 100)

    assert store.cancel("scheduled", now=T0 + 2, reason="not needed")
    assert store.cancel("retryable", now=T0 + 2)
    assert not store.cancel("running")
    assert not store.cancel("available")  # claimed above: running now
    assert not store.cancel("done")
    assert not store.cancel("missing")
    cancelled = store.get("scheduled")
    assert (cancelled.state, cancelled.finished_at) == (S.CANCELLED, T0 + 2)
    assert cancelled.error is not None
    assert cancelled.error["error"] == "not needed"
    assert store.get("running").state is S.RUNNING
    assert store.get("done").state is S.COMPLETED
    assert not store.cancel("scheduled")


def test_cancel_stops_the_rest_of_the_chain(store: Store) -> None:
    chain(store, "a", "b", "c")
    assert store.cancel("a", now=T0 + 1)
    assert [store.get(i).state for i in "abc"] == [S.CANCELLED] * 3
    c = store.get("c")
    assert c.error is not None
    assert c.error["error"] == "cancelled: chain step a was cancelled"


def test_cancelling_a_middle_step_leaves_the_running_head_alone(store: Store) -> None:
    chain(store, "a", "b", "c")
    a = store.claim_one()
    assert store.cancel("b")
    assert store.get("c").state is S.CANCELLED
    assert store.complete(a) == (True, None)
    assert store.claim(now=T0 + 10_000) == []


# -- reading, pruning, deleting -------------------------------------------------------------


def test_get_list_and_count(store: Store) -> None:
    assert store.find("nope") is None
    store.insert([new("old1", queue="q1"), new("old2", queue="q2")], now=T0)
    store.insert([new("new1", queue="q1", run_at=T0 + 50)], now=T0 + 1)
    store.complete(store.claim_one(now=T0 + 1))
    assert [j.id for j in store.listed()] == ["new1", "old2", "old1"]
    assert [j.id for j in store.listed(limit=2)] == ["new1", "old2"]
    assert [j.id for j in store.listed(queue="q1")] == ["new1", "old1"]
    assert [j.id for j in store.listed(S.COMPLETED)] == ["old1"]
    assert [j.id for j in store.listed(S.SCHEDULED, S.AVAILABLE)] == ["new1", "old2"]
    counts = store.count()
    assert set(counts) == set(JobState)
    assert (counts[S.COMPLETED], counts[S.AVAILABLE], counts[S.SCHEDULED]) == (1, 1, 1)
    assert sum(counts.values()) == 3
    got = store.get("old1")
    assert (got.task, got.queue, got.payload) == (
        "tests.conformance:noop",
        "q1",
        '{"args":[],"kwargs":{}}',
    )


def test_prune_deletes_old_finished_jobs_but_keeps_dead_letters(store: Store) -> None:
    store.insert([new(i, max_attempts=1) for i in ("done", "gone", "dead", "recent", "busy")])
    store.insert([new("waiting")])
    jobs = {j.id: j for j in store.claim(now=T0, limit=5)}
    store.complete(jobs["done"], now=T0 + 1)
    store.cancel("waiting", now=T0 + 1)
    store.fail(jobs["dead"], now=T0 + 1)
    store.fail(jobs["gone"], now=T0 + 1, final_state=S.CANCELLED)
    store.complete(jobs["recent"], now=T0 + 100)
    assert store.prune(before=T0 + 50) == 3
    assert sorted(j.id for j in store.listed()) == ["busy", "dead", "recent"]
    assert store.prune(before=T0 + 50, include_discarded=True) == 1
    assert sorted(j.id for j in store.listed()) == ["busy", "recent"]
    assert store.prune(before=T0 + 1_000, limit=0) == 0
    assert store.prune(before=T0 + 1_000) == 1
    assert [j.id for j in store.listed()] == ["busy"]


def test_delete_removes_a_job_unless_it_is_running(store: Store) -> None:
    store.insert([new("a"), new("b", max_attempts=1)])
    a = store.claim_one()
    assert not store.delete(a.id)
    b = store.claim_one()
    store.fail(b)
    assert store.delete(b.id)
    assert store.find(b.id) is None
    assert not store.delete(b.id)
    assert store.get(a.id) == a


def test_owners_running_lists_each_owner_once(store: Store) -> None:
    assert store.owners() == []
    store.insert([new(str(i)) for i in range(4)])
    store.claim("w1", limit=2)
    store.claim("w2", limit=1)
    assert sorted(store.owners()) == ["w1", "w2"]
    store.complete(store.claim_one("w3"))
    assert sorted(store.owners()) == ["w1", "w2"]
