-- vkscraper schema v8 (PostgreSQL): the crawls' Prometheus counters, summed over every process
-- that ever crawled into this database. Crawl processes are short-lived (a scrapyd job, a
-- `scrapy crawl`), so each adds what it counted since its last write (value = value + delta);
-- the service's /metrics serves the totals. labels: the series' label set as canonical JSON
-- (keys sorted, no spaces), so one series is one row.
CREATE TABLE metric_counters (
    name   TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    value  DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (value >= 0),
    PRIMARY KEY (name, labels)
);
