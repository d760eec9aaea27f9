-- vkscraper schema v5 (PostgreSQL): when a comment was found gone from VK. A task counts only
-- the comments its run saw and that had not vanished by the time it finished, also when a
-- resumed run finds comments gone that the interrupted run had stored.
ALTER TABLE comments ADD COLUMN vanished_at timestamptz;
