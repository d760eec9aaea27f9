-- vkscraper schema v6 (PostgreSQL): the scrapyd job that runs (or last ran) a task, so the task
-- API can show the job's state and cancel it.
ALTER TABLE tasks ADD COLUMN job_id text;
