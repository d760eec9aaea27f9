-- vkscraper schema v9 (SQLite): the alerts outbox (see the PostgreSQL file).
CREATE TABLE alert_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('failed', 'completed', 'stopped', 'skipped')),
    task_id     INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    schedule_id INTEGER REFERENCES schedules (id) ON DELETE SET NULL,
    payload     TEXT NOT NULL CHECK (json_valid(payload) AND json_type(payload) = 'object'),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')
);
CREATE INDEX alert_events_created_idx ON alert_events (created_at);

CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        INTEGER NOT NULL REFERENCES alert_events (id) ON DELETE CASCADE,
    webhook         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    claimed_until   TEXT,
    delivered_at    TEXT,
    last_error      TEXT,
    CONSTRAINT alert_deliveries_once UNIQUE (event_id, webhook)
);
CREATE INDEX alert_deliveries_due_idx ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND next_attempt_at IS NOT NULL;
