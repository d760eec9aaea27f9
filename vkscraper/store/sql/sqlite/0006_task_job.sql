-- vkscraper schema v6 (SQLite): the scrapyd job of a task (see the PostgreSQL file).
ALTER TABLE tasks ADD COLUMN job_id TEXT;
