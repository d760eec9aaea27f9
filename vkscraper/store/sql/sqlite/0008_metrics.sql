-- vkscraper schema v8 (SQLite): the crawls' Prometheus counters (see the PostgreSQL file).
CREATE TABLE metric_counters (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels)),
    value  REAL NOT NULL DEFAULT 0 CHECK (value >= 0),
    PRIMARY KEY (name, labels)
);
