-- vkscraper schema v6 (SQLite): the scrapyd job of a task and its settings (see the
-- PostgreSQL file).
ALTER TABLE tasks ADD COLUMN job_id TEXT;
ALTER TABLE tasks ADD COLUMN job_settings TEXT;
