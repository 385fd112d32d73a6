-- Every claim and completion re-checks this index's condition for each row it updates.
-- Written as state IN (three constants), SQLite builds a temporary table of the list for
-- every such check (it does that for lists longer than two), which was a fifth of the
-- work of a round of 32 completions plus a claim of 32. The same condition written as
-- ORs is three comparisons. job_claim must spell it exactly so for the planner to use it.
DROP INDEX IF EXISTS afterward_jobs_due;
CREATE INDEX afterward_jobs_due ON afterward_jobs (priority DESC, run_at, id)
    WHERE state = 'available' OR state = 'scheduled' OR state = 'retryable'
