-- The finished-jobs index was never used: the prune query filters states through
-- json_each, which the planner cannot match to a partial index's WHERE, so it scanned the
-- table anyway. Keeping the index up to date cost every completion (and, through the pages
-- it dirtied, every claim) about a third of its time.
DROP INDEX IF EXISTS afterward_jobs_finished
