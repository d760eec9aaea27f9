-- vkscraper schema v4 (SQLite): why a group of the list was switched off (see the PostgreSQL
-- file).
ALTER TABLE groups ADD COLUMN inactive_reason TEXT;
ALTER TABLE pending_groups ADD COLUMN inactive_reason TEXT;
