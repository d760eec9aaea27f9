-- vkscraper schema v6 (PostgreSQL): the scrapyd job that runs (or last ran) a task, so the task
-- API can show the job's state and cancel it, and the settings it was queued with, which a
-- later run of the task reuses unless it is given its own.
ALTER TABLE tasks ADD COLUMN job_id text;
ALTER TABLE tasks ADD COLUMN job_settings jsonb;
