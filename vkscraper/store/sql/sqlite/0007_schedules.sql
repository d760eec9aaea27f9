-- vkscraper schema v7 (SQLite): schedules and their runs (see the PostgreSQL file). SQLite
-- serves one process at a time, so one process runs the schedules of a SQLite database.
CREATE TABLE schedules (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL DEFAULT '',
    groups           TEXT CHECK (groups IS NULL OR (json_valid(groups) AND json_type(groups) = 'array')),
    every_s          INTEGER CHECK (every_s IS NULL OR every_s >= 1),
    cron             TEXT,
    timezone         TEXT NOT NULL DEFAULT 'UTC',
    settings         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings) AND json_type(settings) = 'object'),
    paused           INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_run_at      TEXT NOT NULL,
    last_task_id     INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    skipped_in_a_row INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    CHECK ((every_s IS NULL) <> (cron IS NULL))
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE paused = 0;

CREATE TABLE schedule_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    due_at      TEXT NOT NULL,
    ran_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'),
    outcome     TEXT NOT NULL CHECK (outcome IN ('claimed', 'started', 'skipped', 'failed')),
    task_id     INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    message     TEXT,
    CONSTRAINT schedule_runs_once UNIQUE (schedule_id, due_at)
);
CREATE INDEX schedule_runs_schedule_idx ON schedule_runs (schedule_id, id);

ALTER TABLE tasks ADD COLUMN schedule_id INTEGER REFERENCES schedules (id) ON DELETE SET NULL;
CREATE INDEX tasks_schedule_idx ON tasks (schedule_id) WHERE schedule_id IS NOT NULL;
