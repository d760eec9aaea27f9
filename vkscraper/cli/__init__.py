"""The ``vkscraper`` command (also ``python -m vkscraper``) and what it shares with ``scrapy
crawl``: exit statuses."""
