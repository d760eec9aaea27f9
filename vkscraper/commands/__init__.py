"""Scrapy commands of this project (``COMMANDS_MODULE``): ``crawl`` with argument checks and
exit statuses, ``settings`` showing the values a crawl uses."""
