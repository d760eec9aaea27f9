"""Which files a build carries: the ``vkscraper`` package only (not the emulator ``fakevk``,
the test kit, the tests or the benchmarks), with its SQL migrations and the task page's
assets, and the version, which lives in the package (``vkscraper.__version__``). The rest of
the metadata, the ``vkscraper`` command and the ``scrapy`` entry point scrapyd reads are in
pyproject.toml. ``scrapyd-deploy`` runs this file to build the egg it uploads."""

import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

# Read, not imported: a build needs none of the package's dependencies.
INIT = Path(__file__).resolve().with_name("vkscraper") / "__init__.py"
VERSION = re.search(r'^__version__ = "([^"]+)"$', INIT.read_text(), re.M)
if VERSION is None:
    raise RuntimeError(f'{INIT} has no line __version__ = "…"')

setup(
    version=VERSION[1],
    # Namespace discovery lists the data folders (store/sql/*, service/static) as packages
    # too, as setuptools wants for folders that carry package data.
    packages=find_namespace_packages(
        include=["vkscraper", "vkscraper.*"], exclude=["*.__pycache__"]
    ),
    package_data={"vkscraper.store": ["sql/*/*.sql"], "vkscraper.service": ["static/*"]},
    zip_safe=False,
)
