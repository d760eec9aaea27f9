"""Packaging for `scrapyd-deploy` (an egg for a remote scrapyd); the metadata is in
pyproject.toml. The egg must carry the SQL migrations and the task page's assets."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vkscraper", "vkscraper.*"]),
    package_data={"vkscraper.store": ["sql/*/*.sql"], "vkscraper.service": ["static/*"]},
    entry_points={"scrapy": ["settings = vkscraper.settings"]},
    zip_safe=False,
)
