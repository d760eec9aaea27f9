-- vkscraper schema v1 (SQLite). Applied by vkscraper.store.migrations under BEGIN IMMEDIATE.
-- Same tables and columns as the PostgreSQL schema. Differences: timestamps are ISO-8601 UTC
-- text of fixed width ('2024-01-31T12:00:00.000000Z', so text order is time order), booleans
-- are 0/1 integers, JSON columns are text checked with json_valid().
-- The code always writes timestamps itself; the defaults only serve manual inserts.

CREATE TABLE groups (
    id          INTEGER PRIMARY KEY CHECK (id > 0),
    screen_name TEXT,
    name        TEXT,
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX groups_screen_name_idx ON groups (screen_name);

CREATE TABLE pending_groups (
    screen_name TEXT PRIMARY KEY,
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- ids are never reused
    status      TEXT NOT NULL DEFAULT 'created'
                CHECK (status IN ('created', 'in_progress', 'completed', 'failed')),
    groups      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(groups) AND json_type(groups) = 'array'),
    metrics     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metrics) AND json_type(metrics) = 'object'),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    started_at  TEXT,
    finished_at TEXT,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);

CREATE TABLE posts (
    id             INTEGER PRIMARY KEY,
    vk_post_id     INTEGER NOT NULL,
    owner_id       INTEGER NOT NULL,
    group_id       INTEGER NOT NULL,
    text           TEXT NOT NULL DEFAULT '',
    likes          INTEGER NOT NULL DEFAULT 0,
    comments_count INTEGER NOT NULL DEFAULT 0,
    is_pinned      INTEGER NOT NULL DEFAULT 0 CHECK (is_pinned IN (0, 1)),
    date           TEXT NOT NULL,
    task_id        INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    UNIQUE (owner_id, vk_post_id)
);
CREATE INDEX posts_task_id_idx ON posts (task_id);

CREATE TABLE comments (
    id            INTEGER PRIMARY KEY,
    vk_comment_id INTEGER NOT NULL,
    post_vk_id    INTEGER NOT NULL,
    owner_id      INTEGER NOT NULL,
    parent_id     INTEGER,
    thread_count  INTEGER NOT NULL DEFAULT 0,
    author_id     INTEGER,
    author_name   TEXT,
    text          TEXT NOT NULL DEFAULT '',
    likes         INTEGER NOT NULL DEFAULT 0,
    date          TEXT,
    deleted       INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    task_id       INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    UNIQUE (owner_id, vk_comment_id)
);
CREATE INDEX comments_owner_post_idx ON comments (owner_id, post_vk_id);
CREATE INDEX comments_task_id_idx ON comments (task_id);

CREATE TABLE task_posts (
    task_id    INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    owner_id   INTEGER NOT NULL,
    vk_post_id INTEGER NOT NULL,
    PRIMARY KEY (task_id, owner_id, vk_post_id)
) WITHOUT ROWID;
