-- name: job_insert --
-- Store one new job held by the process that stored it; positional (bulk inserts bind a tuple
-- per row, much cheaper than a dict): the fields of NewJob in their order, then now. State,
-- attempt and token, the same for every row, are written here, not bound.
INSERT INTO afterward_jobs (id, task, payload, queue, priority, max_attempts, timeout, run_at,
    chain_next, lease_owner, lease_expires_at, state, attempt, created_at, attempted_at,
    lease_token)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'running', 1, ?12, ?12, 1)

-- name: job_insert_unclaimed --
-- job_insert for jobs nobody holds yet (enqueue): attempt, lease and token keep their defaults.
-- The first nine fields of NewJob, then now. A job is due if run_at <= now; one with no run_at
-- waits for the chain step before it.
INSERT INTO afterward_jobs (id, task, payload, queue, priority, max_attempts, timeout, run_at,
    chain_next, state, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
    CASE WHEN ?8 <= ?10 THEN 'available' ELSE 'scheduled' END, ?10)

-- name: job_insert_plain --
-- job_insert for jobs with no timeout and no chain step after them, the common case: both
-- columns keep their NULL default. Python's sqlite3 binds None only after looking for an
-- adapter, which raises and clears two AttributeErrors: 3,300 instructions a value, a tenth
-- of a bulk enqueue's cost per job. Parameters: id, task, payload, queue, priority,
-- max_attempts, run_at, owner, lease expiry, now.
INSERT INTO afterward_jobs (id, task, payload, queue, priority, max_attempts, run_at,
    lease_owner, lease_expires_at, state, attempt, created_at, attempted_at, lease_token)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'running', 1, ?10, ?10, 1)

-- name: job_insert_unclaimed_plain --
-- job_insert_unclaimed without timeout and chain_next (see job_insert_plain): id, task,
-- payload, queue, priority, max_attempts, run_at, now.
INSERT INTO afterward_jobs (id, task, payload, queue, priority, max_attempts, run_at, state,
    created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
    CASE WHEN ?7 <= ?8 THEN 'available' ELSE 'scheduled' END, ?8)

-- name: job_claim --
-- Claim the due jobs with the highest priority, oldest first: count an attempt, take a lease.
-- The state test is written exactly as afterward_jobs_due's condition (migration 0003), so
-- the planner walks that index; rowid, which the index holds, finds each row without a
-- second search through the id index. Returns only what the claim did not set itself: its
-- caller knows the state, owner and lease, and a claimable job has no finish time or result.
UPDATE afterward_jobs
SET state = 'running', attempt = attempt + 1, attempted_at = :now, lease_owner = :owner,
    lease_token = lease_token + 1, lease_expires_at = :expires
WHERE rowid IN (
    SELECT rowid FROM afterward_jobs
    WHERE (state = 'available' OR state = 'scheduled' OR state = 'retryable') AND run_at <= :now
      AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
    ORDER BY priority DESC, run_at, id
    LIMIT :limit)
RETURNING id, task, payload, queue, priority, attempt, max_attempts, timeout, run_at, created_at,
    lease_token, chain_next, errors

-- name: job_complete --
-- Record success if the caller still holds the lease: changes one row, or none. No RETURNING:
-- SQLite would store the returned rows in a temporary table first, and the caller knows the
-- chain's next step from the claim (job_chain_next reads it for callers that do not).
UPDATE afterward_jobs
SET state = 'completed', finished_at = :now, result = :result,
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :token

-- name: jobs_complete_many --
-- job_complete for several jobs at once: items is a JSON array of [id, token, now, result].
UPDATE afterward_jobs AS j
SET state = 'completed', finished_at = json_extract(i.value, '$[2]'),
    result = json_extract(i.value, '$[3]'), lease_owner = NULL, lease_expires_at = NULL
FROM json_each(:items) AS i
WHERE j.id = json_extract(i.value, '$[0]') AND j.lease_token = json_extract(i.value, '$[1]')
  AND j.state = 'running'

-- name: jobs_completed_as --
-- After jobs_complete_many changed fewer rows than it was given: which of the items it
-- completed (a job completed with the item's token and time; a token is never reused).
SELECT j.id FROM afterward_jobs AS j, json_each(:items) AS i
WHERE j.id = json_extract(i.value, '$[0]') AND j.lease_token = json_extract(i.value, '$[1]')
  AND j.state = 'completed' AND j.finished_at = json_extract(i.value, '$[2]')

-- name: job_chain_next --
-- The next chain step of a job, for a completion whose caller did not pass it.
SELECT chain_next FROM afterward_jobs WHERE id = :id

-- name: chain_release --
-- Make the next chain step available now that the step before it completed.
UPDATE afterward_jobs SET state = 'available', run_at = :now
WHERE id = :id AND state = 'scheduled' AND run_at IS NULL

-- name: chain_claim --
-- Claim the next chain step for the owner that ran the step before it.
UPDATE afterward_jobs
SET state = 'running', run_at = :now, attempt = attempt + 1, attempted_at = :now,
    lease_owner = :owner, lease_token = lease_token + 1, lease_expires_at = :expires
WHERE id = :id AND state = 'scheduled' AND run_at IS NULL
RETURNING *

-- name: job_retry --
-- Record a failed attempt with attempts left: the job waits in retryable until retry_at.
UPDATE afterward_jobs
SET state = 'retryable', run_at = :retry_at, errors = json_insert(errors, '$[#]', json(:error)),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :token

-- name: job_end_failed --
-- Record a failed attempt that ends the job (discarded or cancelled); returns the next step.
UPDATE afterward_jobs
SET state = :state, finished_at = :now, errors = json_insert(errors, '$[#]', json(:error)),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :token
RETURNING chain_next

-- name: chain_cancel_step --
-- Cancel one chain step that has not finished; returns the step after it.
UPDATE afterward_jobs
SET state = 'cancelled', finished_at = :now, errors = json_insert(errors, '$[#]', json(:error))
WHERE id = :id AND state IN ('scheduled', 'available', 'retryable')
RETURNING chain_next

-- name: job_release --
-- Give an unstarted claimed job back; the attempt it was charged is returned too.
UPDATE afterward_jobs
SET state = 'available', run_at = :now, attempt = max(attempt - 1, 0),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :token

-- name: job_heartbeat --
-- Extend one lease if this owner still holds it.
UPDATE afterward_jobs SET lease_expires_at = :expires
WHERE id = :id AND state = 'running' AND lease_token = :token AND lease_owner = :owner
RETURNING id

-- name: jobs_lost --
-- Running jobs whose lease expired (or never had one) or whose owner is known to be dead.
SELECT id, lease_token, attempt, max_attempts, lease_owner,
       lease_owner IN (SELECT value FROM json_each(:dead)) AS owner_dead
FROM afterward_jobs
WHERE state = 'running'
  AND (lease_expires_at IS NULL OR lease_expires_at < :now
       OR lease_owner IN (SELECT value FROM json_each(:dead)))
LIMIT :limit

-- name: job_cancel --
-- Cancel a job that has not started; returns the next chain step.
UPDATE afterward_jobs
SET state = 'cancelled', finished_at = :now, errors = json_insert(errors, '$[#]', json(:error))
WHERE id = :id AND state IN ('scheduled', 'available', 'retryable')
RETURNING chain_next

-- name: job_get --
-- Read one job.
SELECT * FROM afterward_jobs WHERE id = :id

-- name: jobs_list --
-- Read jobs, newest first, optionally of some states and one queue.
SELECT * FROM afterward_jobs
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:queue IS NULL OR queue = :queue)
ORDER BY created_at DESC, id DESC
LIMIT :limit

-- name: jobs_count --
-- Count jobs by state.
SELECT state, count(*) FROM afterward_jobs GROUP BY state

-- name: jobs_prunable --
-- The next rows, in table order after :after, that finished before a time in the given final
-- states. Read outside any write transaction: it scans the table, and writers need not wait.
SELECT rowid FROM afterward_jobs
WHERE rowid > :after AND state IN (SELECT value FROM json_each(:states)) AND finished_at < :before
ORDER BY rowid
LIMIT :limit

-- name: jobs_prune --
-- Delete the rows jobs_prunable found, if they still qualify.
DELETE FROM afterward_jobs
WHERE rowid IN (SELECT value FROM json_each(:rowids))
  AND state IN (SELECT value FROM json_each(:states)) AND finished_at < :before

-- name: job_delete --
-- Delete one job unless it is running.
DELETE FROM afterward_jobs WHERE id = :id AND state != 'running'

-- name: owners_running --
-- The distinct owners of running jobs.
SELECT DISTINCT lease_owner FROM afterward_jobs WHERE state = 'running' AND lease_owner IS NOT NULL
