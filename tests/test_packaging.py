"""The installable package: a wheel built from the source tree carries ``vkscraper`` only (no
emulator, test kit, tests or benchmarks) with its SQL migrations and page assets, declares the
runtime dependencies (not ``quickjs``, the emulator's), and installed into a venv of its own
gives a ``vkscraper`` command that works from any directory.

The builds run offline: pip uses this venv's setuptools (``--no-build-isolation``) and the
throwaway venv sees this venv's packages through a ``.pth`` file, so only the wheel itself is
installed."""

from __future__ import annotations

import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from configparser import ConfigParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import vkscraper

pytestmark = pytest.mark.integration  # builds a wheel and a venv, runs the installed command

REPO = Path(__file__).resolve().parents[1]
# The source tree as a clone has it: what must stay out of the package is there too.
SOURCE_FILES = ("pyproject.toml", "setup.py", "README.md", "scrapy.cfg", "requirements.txt")
SOURCE_DIRS = ("vkscraper", "fakevk", "testkit", "tests", "benchmarks", "scripts")
DIST_INFO = f"vkscraper-{vkscraper.__version__}.dist-info/"


def _run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the source tree (a build writes into the tree it builds)."""
    if importlib.util.find_spec("wheel") is None:
        pytest.fail("the pinned setuptools builds wheels with the wheel package: make venv "
                    "(requirements-dev.txt)", pytrace=False)  # fmt: skip
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in SOURCE_FILES:
        shutil.copy(REPO / name, source / name)
    for name in SOURCE_DIRS:
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = root / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", out, source]
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("vkscraper-*.whl")
    return path


def _metadata(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(DIST_INFO + name).decode()


def test_the_wheel_carries_the_vkscraper_package_only(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    foreign = sorted(n for n in names if not n.startswith(("vkscraper/", DIST_INFO)))
    assert foreign == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Every module, migration and page asset of the package, and nothing else under it.
    expected = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "vkscraper").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {n for n in names if n.startswith("vkscraper/")} == expected
    for needed in (
        "vkscraper/store/sql/postgres/0001_init.sql",
        "vkscraper/store/sql/sqlite/0001_init.sql",
        "vkscraper/service/static/tasks.js",
        "vkscraper/service/static/tasks.css",
    ):
        assert needed in names


def test_the_wheel_declares_the_runtime_dependencies_within_the_pins(wheel):
    meta = email.parser.Parser().parsestr(_metadata(wheel, "METADATA"))
    assert meta["Version"] == vkscraper.__version__  # the one place it is written
    required = {Requirement(r).name.lower(): Requirement(r) for r in meta.get_all("Requires-Dist")}
    for name in ("scrapy", "twisted", "scrapy-redis", "redis", "scrapyd", "psycopg2-binary"):
        assert name in required, f"{name} is not declared"
    assert "quickjs" not in required  # the emulator's, a development requirement only
    # Each range admits the exact version requirements.txt pins (what the tests ran with).
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.split("#")[0].strip():
            pin = Requirement(line.split("#")[0])
            pins[pin.name.lower()] = next(iter(pin.specifier)).version
    assert "quickjs" not in pins
    for name, requirement in required.items():
        assert name in pins, f"{name} is declared but not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_the_wheel_declares_the_command_and_scrapyds_settings_entry_point(wheel):
    entry_points = ConfigParser()
    entry_points.read_string(_metadata(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"vkscraper": "vkscraper.cli.main:main"}
    assert entry_points["scrapy"]["settings"] == "vkscraper.settings"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel installed (no network): the dependencies come from this venv."""
    venv = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    shared = sysconfig.get_paths()["purelib"]
    Path(purelib.stdout.strip(), "shared-dev-venv.pth").write_text(shared + "\n")
    put = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
         "--no-index", "-q", wheel]
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    return venv


def _elsewhere(cwd: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run in a directory without the repository: no scrapy.cfg, nothing importable from it."""
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCRAPY_SETTINGS_MODULE")
    }
    return _run(list(args), cwd=cwd, env={**inherited, **env})


def test_the_installed_command_works_from_another_directory(installed, tmp_path):
    vkscraper = installed / "bin" / "vkscraper"
    sqlite = {"DATABASE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}"}
    helped = _elsewhere(tmp_path, vkscraper, "--help")
    assert helped.returncode == 0, helped.stderr
    for name in ("migrate", "groups", "task", "export", "worker"):
        assert name in helped.stdout
    worker_help = _elsewhere(tmp_path, vkscraper, "worker", "--help")
    assert worker_help.returncode == 0, worker_help.stderr
    # The migrations (SQL files read from the installed package) run on the empty store.
    listed = _elsewhere(tmp_path, vkscraper, "task", "list", **sqlite)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "no tasks\n", "")
    created = _elsewhere(tmp_path, vkscraper, "task", "create", "--groups", "apiclub", **sqlite)
    assert (created.returncode, created.stdout) == (0, "1\n"), created.stderr
    listed = _elsewhere(tmp_path, vkscraper, "task", "list", **sqlite)
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split()[:2] == ["1", "created"]


def test_the_installed_package_imports_whole_without_the_repository(installed, tmp_path):
    """Every module imports from the venv without the emulator's quickjs (this venv has it,
    but nothing installed uses it), and the emulator and the test kit are absent."""
    python = installed / "bin" / "python"
    every_module = (
        "import importlib, pkgutil, sys, vkscraper; print(vkscraper.__file__); "
        "[importlib.import_module(m.name) "
        "for m in pkgutil.walk_packages(vkscraper.__path__, 'vkscraper.')]; "
        "print(sorted(n for n in ('quickjs', 'fakevk', 'testkit') if n in sys.modules))"
    )
    imported = _elsewhere(tmp_path, python, "-c", every_module)
    assert imported.returncode == 0, imported.stderr
    where, foreign = imported.stdout.splitlines()
    assert where.startswith(str(installed)) and foreign == "[]", imported.stdout
    for module in ("fakevk", "testkit"):
        tried = _elsewhere(tmp_path, python, "-c", f"import {module}")
        assert f"No module named '{module}'" in tried.stderr, tried.stderr


def test_scrapy_finds_the_installed_project_by_its_settings_module(installed, tmp_path):
    """``scrapy crawl vk`` outside a checkout: SCRAPY_SETTINGS_MODULE names the project."""
    python = installed / "bin" / "python"
    project = {"SCRAPY_SETTINGS_MODULE": "vkscraper.settings"}
    spiders = _elsewhere(tmp_path, python, "-m", "scrapy", "list", **project)
    assert (spiders.returncode, spiders.stdout) == (0, "vk\n"), spiders.stderr
    commands = _elsewhere(
        tmp_path, python, "-m", "scrapy", "settings", "--get", "COMMANDS_MODULE", **project
    )
    assert commands.stdout == "vkscraper.commands\n", commands.stderr
