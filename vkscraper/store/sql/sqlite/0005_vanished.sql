-- vkscraper schema v5 (SQLite): when a comment was found gone from VK (see the PostgreSQL file).
ALTER TABLE comments ADD COLUMN vanished_at TEXT;
