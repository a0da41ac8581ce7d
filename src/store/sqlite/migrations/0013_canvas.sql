-- Every job's message as first received (issue 29): the options of 0005 are now kept for every
-- job, not only a SCHEDULED one, so that each re-publish (a lapsed lease, a give-back, a retry,
-- the outbox) sends the message as it came; plus what Celery's canvas needs, NULL for a plain
-- job. The same change as PostgreSQL's 0013.
-- `embed`: the body's callbacks, errbacks and chain (Celery's signatures) as JSON, when any.
-- `group_id`, `group_index`: the `group` and `group_index` headers (a member of a group).
-- `parent_id`, `root_id`: the job whose end published this one, and the first of its workflow.
ALTER TABLE jobs ADD COLUMN embed TEXT;
ALTER TABLE jobs ADD COLUMN group_id TEXT;
ALTER TABLE jobs ADD COLUMN group_index INTEGER;
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN root_id TEXT;
-- `cm jobs tree` follows `parent_id` as it follows `job_edges`: an index of the canvas jobs
-- alone (a plain job's NULL costs it nothing).
CREATE INDEX jobs_parent_id ON jobs (parent_id) WHERE parent_id IS NOT NULL;
