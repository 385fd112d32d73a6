-- The jobs table and the indexes the claim, rescue and prune queries walk.
CREATE TABLE afterward_jobs (
    id               TEXT PRIMARY KEY,
    queue            TEXT    NOT NULL,
    task             TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL,
    run_at           REAL,
    created_at       REAL    NOT NULL,
    attempted_at     REAL,
    finished_at      REAL,
    lease_owner      TEXT,
    lease_token      INTEGER NOT NULL DEFAULT 0,
    lease_expires_at REAL,
    chain_next       TEXT,
    errors           TEXT    NOT NULL DEFAULT '[]',
    result           TEXT
);

CREATE INDEX afterward_jobs_due ON afterward_jobs (priority DESC, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');

CREATE INDEX afterward_jobs_leases ON afterward_jobs (lease_expires_at)
    WHERE state = 'running';

CREATE INDEX afterward_jobs_finished ON afterward_jobs (finished_at)
    WHERE state IN ('completed', 'cancelled', 'discarded');
