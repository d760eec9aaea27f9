-- vkscraper schema v2 (SQLite): when each comment was last returned by VK (see the PostgreSQL
-- file). ALTER TABLE cannot add a NOT NULL column without a constant default here; the upserts
-- always set it.
ALTER TABLE comments ADD COLUMN last_seen_at TEXT;
UPDATE comments SET last_seen_at = updated_at;
