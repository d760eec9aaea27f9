-- vkscraper schema v4 (PostgreSQL): why a group of the list was switched off. A crawl
-- deactivates a community that VK reports unknown, deleted or banned, and says why here.
ALTER TABLE groups ADD COLUMN inactive_reason TEXT;
ALTER TABLE pending_groups ADD COLUMN inactive_reason TEXT;
