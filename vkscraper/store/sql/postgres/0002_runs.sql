-- vkscraper schema v2 (PostgreSQL): when each comment was last returned by VK.
-- A task's comments are those its run saw (last_seen_at >= the run's start), and a comment that
-- a complete crawl of its post no longer returns is kept but marked deleted.
ALTER TABLE comments ADD COLUMN last_seen_at timestamptz;
UPDATE comments SET last_seen_at = updated_at;
ALTER TABLE comments ALTER COLUMN last_seen_at SET NOT NULL;
ALTER TABLE comments ALTER COLUMN last_seen_at SET DEFAULT now();
