"""Which files a build carries: the ``vkscraper`` package only (not the emulator ``fakevk``,
the test kit, the tests or the benchmarks), with its SQL migrations and the task page's
assets. The metadata, the ``vkscraper`` command and the ``scrapy`` entry point scrapyd reads
are in pyproject.toml. ``scrapyd-deploy`` runs this file to build the egg it uploads."""

from setuptools import find_namespace_packages, setup

setup(
    # Namespace discovery lists the data folders (store/sql/*, service/static) as packages
    # too, as setuptools wants for folders that carry package data.
    packages=find_namespace_packages(
        include=["vkscraper", "vkscraper.*"], exclude=["*.__pycache__"]
    ),
    package_data={"vkscraper.store": ["sql/*/*.sql"], "vkscraper.service": ["static/*"]},
    zip_safe=False,
)
