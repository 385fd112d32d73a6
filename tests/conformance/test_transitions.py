"""Every edge of ``jobs.TRANSITIONS`` is one a backend really performs, and no other.

Each edge has a scenario that brings a job to the edge's start and then makes exactly that
one change. The harness fails any call whose state change is not in the table, so the
whole conformance suite also checks that no operation produces an edge outside it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from afterward.jobs import TRANSITIONS, Job, JobState
from tests.conformance._harness import LEASE, T0, Edge, Store, new

S = JobState
Action = Callable[[], object]
Scenario = Callable[[Store, str], tuple[str, Action]]


# Each scenario's jobs live in their own queue (named by the prefix ``p``), so scenarios can
# share one store and a claim takes exactly the scenario's job.


def _claimed(s: Store, p: str, **fields: object) -> Job:
    s.insert([new(p + "a", queue=p, **fields)])
    jobs = s.claim(queues=(p,))
    assert [j.id for j in jobs] == [p + "a"]
    return jobs[0]


def _retryable(s: Store, p: str) -> str:
    assert s.fail(_claimed(s, p), retry_at=T0 + 5)
    return p + "a"


def _scheduled_to_available(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "b", run_at=None, queue=p)])
    a = _claimed(s, p, chain_next=p + "b")
    return p + "b", lambda: s.complete(a)


def _scheduled_to_running(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "a", run_at=T0 + 10, queue=p)])
    return p + "a", lambda: s.claim(now=T0 + 10, queues=(p,))


def _chain_step_to_running(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "b", run_at=None, queue=p)])
    a = _claimed(s, p, chain_next=p + "b")
    return p + "b", lambda: s.complete(a, next_owner="w1")


def _scheduled_to_cancelled(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "a", run_at=T0 + 10, queue=p)])
    return p + "a", lambda: s.cancel(p + "a")


def _available_to_running(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "a", queue=p)])
    return p + "a", lambda: s.claim(queues=(p,))


def _available_to_cancelled(s: Store, p: str) -> tuple[str, Action]:
    s.insert([new(p + "a", queue=p)])
    return p + "a", lambda: s.cancel(p + "a")


def _running_to_completed(s: Store, p: str) -> tuple[str, Action]:
    a = _claimed(s, p)
    return a.id, lambda: s.complete(a)


def _running_to_retryable(s: Store, p: str) -> tuple[str, Action]:
    a = _claimed(s, p)
    return a.id, lambda: s.fail(a, retry_at=T0 + 5)


def _running_to_discarded(s: Store, p: str) -> tuple[str, Action]:
    a = _claimed(s, p)
    return a.id, lambda: s.fail(a)


def _running_to_available(s: Store, p: str) -> tuple[str, Action]:
    a = _claimed(s, p)
    return a.id, lambda: s.release(a)


def _running_to_cancelled(s: Store, p: str) -> tuple[str, Action]:
    a = _claimed(s, p)
    return a.id, lambda: s.fail(a, final_state=S.CANCELLED)


def _retryable_to_running(s: Store, p: str) -> tuple[str, Action]:
    job_id = _retryable(s, p)
    return job_id, lambda: s.claim(now=T0 + 5, queues=(p,))


def _retryable_to_cancelled(s: Store, p: str) -> tuple[str, Action]:
    job_id = _retryable(s, p)
    return job_id, lambda: s.cancel(job_id)


SCENARIOS: dict[Edge, list[Scenario]] = {
    (S.SCHEDULED, S.AVAILABLE): [_scheduled_to_available],
    (S.SCHEDULED, S.RUNNING): [_scheduled_to_running, _chain_step_to_running],
    (S.SCHEDULED, S.CANCELLED): [_scheduled_to_cancelled],
    (S.AVAILABLE, S.RUNNING): [_available_to_running],
    (S.AVAILABLE, S.CANCELLED): [_available_to_cancelled],
    (S.RUNNING, S.COMPLETED): [_running_to_completed],
    (S.RUNNING, S.RETRYABLE): [_running_to_retryable],
    (S.RUNNING, S.DISCARDED): [_running_to_discarded],
    (S.RUNNING, S.AVAILABLE): [_running_to_available],
    (S.RUNNING, S.CANCELLED): [_running_to_cancelled],
    (S.RETRYABLE, S.RUNNING): [_retryable_to_running],
    (S.RETRYABLE, S.CANCELLED): [_retryable_to_cancelled],
}
EDGES = sorted(TRANSITIONS)


def test_every_edge_of_the_table_has_a_scenario() -> None:
    assert set(SCENARIOS) == TRANSITIONS


@pytest.mark.parametrize("edge", EDGES, ids=[f"{a.value}->{b.value}" for a, b in EDGES])
def test_the_storage_performs_the_edge(store: Store, edge: Edge) -> None:
    for n, scenario in enumerate(SCENARIOS[edge]):
        prefix = f"s{n}-"
        job_id, action = scenario(store, prefix)
        assert store.get(job_id).state is edge[0]
        mark = len(store.edges)
        action()
        # Completing a chain step also completes its predecessor; only this job is checked.
        assert [e for i, e in store.edges[mark:] if i == job_id] == [edge]
        assert store.get(job_id).state is edge[1]


def test_the_operations_produce_no_edge_outside_the_table(store: Store) -> None:
    # Every scenario on one store, then the operations scenarios do not reach: stale
    # tokens, rescue (expired and dead owners), chain cancellation, prune and delete.
    for edge in EDGES:
        for n, scenario in enumerate(SCENARIOS[edge]):
            _, action = scenario(store, f"{edge[0].value}-{edge[1].value}-{n}-")
            action()
    store.insert(
        [
            new("x1", chain_next="x2", queue="x", max_attempts=1),
            new("x2", run_at=None, chain_next="x3", queue="x"),
            new("x3", run_at=None, queue="x"),
            new("y1", queue="y"),
            new("z1", queue="z"),
        ]
    )
    x1 = store.claim("w1", queues=("x",))[0]
    y1 = store.claim("dead", queues=("y",))[0]
    z1 = store.claim("w1", queues=("z",))[0]
    assert store.heartbeat("w1", [(z1.id, z1.lease_token)], T0 + 10 * LEASE)
    rescued = store.rescue(now=T0 + LEASE + 1, dead_owners=["dead"])
    assert x1.id in rescued.discarded
    assert y1.id in rescued.retried
    assert z1.id not in rescued.retried + rescued.discarded
    assert store.get("x3").state is S.CANCELLED
    assert store.complete(x1) == (False, None)
    assert not store.release(y1)
    assert not store.fail(y1)
    store.prune(before=T0 + 1_000, include_discarded=True)
    for job in store.listed(limit=10_000):
        store.delete(job.id)
    seen = store.all_edges()
    assert seen <= TRANSITIONS
    assert seen == TRANSITIONS
