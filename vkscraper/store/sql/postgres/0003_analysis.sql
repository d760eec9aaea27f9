-- vkscraper schema v3 (PostgreSQL): the fields analysts ask for, and two documented views.
-- Every new column is nullable or has a default, so rows stored before stay valid; they get
-- their values at the next crawl of their post (NULL / 0 until then).

-- Posts: the author (the community itself, or a user on an open wall), the user who signed a
-- community post, views (NULL when VK does not count them for the post), reposts and the time
-- of the last edit (NULL when never edited).
ALTER TABLE posts ADD COLUMN from_id BIGINT;
ALTER TABLE posts ADD COLUMN signer_id BIGINT;
ALTER TABLE posts ADD COLUMN views BIGINT;
ALTER TABLE posts ADD COLUMN reposts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE posts ADD COLUMN edited timestamptz;

-- Comments: whom a reply answers (a user, or a community as a negative id) and which comment
-- of the same wall (often another reply of the same thread); NULL at the top level.
ALTER TABLE comments ADD COLUMN reply_to_user BIGINT;
ALTER TABLE comments ADD COLUMN reply_to_comment BIGINT;

-- Posts with their community; url is the post's address on VK. A post whose group is not in
-- the groups table is kept, with NULL names (LEFT JOIN).
CREATE VIEW posts_with_group AS
SELECT p.id, p.vk_post_id, p.owner_id, p.group_id,
       g.screen_name AS group_screen_name, g.name AS group_name,
       p.from_id, p.signer_id, p.text, p.date, p.edited,
       p.likes, p.reposts, p.views, p.comments_count, p.is_pinned,
       'https://vk.com/wall' || p.owner_id || '_' || p.vk_post_id AS url,
       p.task_id, p.created_at, p.updated_at
FROM posts p
LEFT JOIN groups g ON g.id = p.group_id;

-- Comments with their post. VK numbers posts and comments per wall, so post 7 of one
-- community and post 7 of another are different posts: the join needs owner_id as well as
-- the post id, or comments of one wall would be paired with posts of another.
-- A comment whose post is not stored is kept, with NULL post columns (LEFT JOIN).
CREATE VIEW comments_with_post AS
SELECT c.id, c.vk_comment_id, c.owner_id, -c.owner_id AS group_id, c.post_vk_id,
       c.parent_id, c.reply_to_comment, c.reply_to_user, c.thread_count,
       c.author_id, c.author_name, c.text, c.likes, c.date, c.deleted, c.last_seen_at,
       c.task_id, c.created_at, c.updated_at,
       p.text AS post_text, p.date AS post_date, p.from_id AS post_from_id,
       'https://vk.com/wall' || c.owner_id || '_' || c.post_vk_id AS post_url
FROM comments c
LEFT JOIN posts p ON p.owner_id = c.owner_id AND p.vk_post_id = c.post_vk_id;
