-- vkscraper schema v3 (SQLite): the fields analysts ask for, and two documented views (see the
-- PostgreSQL file for what each column means). Same columns and views; timestamps are the
-- fixed-width ISO-8601 UTC text of 0001, booleans 0/1.

ALTER TABLE posts ADD COLUMN from_id INTEGER;
ALTER TABLE posts ADD COLUMN signer_id INTEGER;
ALTER TABLE posts ADD COLUMN views INTEGER;
ALTER TABLE posts ADD COLUMN reposts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE posts ADD COLUMN edited TEXT;

ALTER TABLE comments ADD COLUMN reply_to_user INTEGER;
ALTER TABLE comments ADD COLUMN reply_to_comment INTEGER;

CREATE VIEW posts_with_group AS
SELECT p.id, p.vk_post_id, p.owner_id, p.group_id,
       g.screen_name AS group_screen_name, g.name AS group_name,
       p.from_id, p.signer_id, p.text, p.date, p.edited,
       p.likes, p.reposts, p.views, p.comments_count, p.is_pinned,
       'https://vk.com/wall' || p.owner_id || '_' || p.vk_post_id AS url,
       p.task_id, p.created_at, p.updated_at
FROM posts p
LEFT JOIN groups g ON g.id = p.group_id;

-- The join needs owner_id: post and comment ids are per wall (see the PostgreSQL file).
CREATE VIEW comments_with_post AS
SELECT c.id, c.vk_comment_id, c.owner_id, -c.owner_id AS group_id, c.post_vk_id,
       c.parent_id, c.reply_to_comment, c.reply_to_user, c.thread_count,
       c.author_id, c.author_name, c.text, c.likes, c.date, c.deleted, c.last_seen_at,
       c.task_id, c.created_at, c.updated_at,
       p.text AS post_text, p.date AS post_date, p.from_id AS post_from_id,
       'https://vk.com/wall' || c.owner_id || '_' || c.post_vk_id AS post_url
FROM comments c
LEFT JOIN posts p ON p.owner_id = c.owner_id AND p.vk_post_id = c.post_vk_id;
