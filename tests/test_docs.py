"""The hand-written reference pages in docs/ name everything the code defines.

Each test collects names from the code (the ``VK_*`` defaults, the exit statuses, the ``vk_*``
request meta keys, the ``vk/*`` stats, the CLI's subcommands) and fails naming those missing
from their page, so a setting or a stat added to the code without its documentation fails
here. Fast: no database, no subprocess, no Sphinx.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vkscraper import defaults
from vkscraper.cli import exitcodes
from vkscraper.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PACKAGE = REPO / "vkscraper"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def table_rows(text: str, name: str) -> list[str]:
    """The Markdown table rows that name ``name`` in backticks."""
    return [line for line in text.splitlines() if line.startswith("|") and f"`{name}`" in line]


def shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def source_lines() -> list[str]:
    return [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def test_every_vk_setting_is_in_the_settings_reference_with_its_default():
    text = page("reference/settings.md")
    missing = {}
    for name, value in defaults.all_defaults().items():
        rows = table_rows(text, name)
        if not rows:
            missing[name] = "no table row"
        elif not any(f"`{shown(value)}`" in row for row in rows):
            missing[name] = f"default `{shown(value)}` not in its row"
    assert not missing, f"docs/reference/settings.md: {missing}"


def test_every_exit_status_is_in_the_cli_reference():
    text = page("reference/cli.md")
    statuses = {
        name: value
        for name, value in vars(exitcodes).items()
        if name.isupper() and isinstance(value, int)
    }
    assert statuses, "no exit status constant found in vkscraper/cli/exitcodes.py"
    missing = [
        f"{name} ({value})"
        for name, value in statuses.items()
        if not any(row.startswith(f"| {value} |") for row in table_rows(text, name))
    ]
    assert not missing, f"docs/reference/cli.md has no row `| N | `NAME` |` for {missing}"


def cli_commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    commands = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                commands.append(path)
                commands += cli_commands(sub, f"{path} ")
    return commands


def test_every_cli_command_is_in_the_cli_reference():
    text = page("reference/cli.md")
    commands = cli_commands(build_parser())
    assert {"migrate", "task watch", "worker stop"} <= set(commands)
    missing = [c for c in commands if not re.search(rf"`{re.escape(c)}\b", text)]
    assert not missing, f"docs/reference/cli.md does not show {missing}"


META_KEY = re.compile(r"""["'](vk_[a-z_]+)["']""")


def test_every_request_meta_key_is_in_the_meta_reference():
    # A line that mentions meta (request.meta, meta=, META_… constants) and quotes a vk_* name.
    keys = {
        key for line in source_lines() if "meta" in line.lower() for key in META_KEY.findall(line)
    }
    assert {"vk_method", "vk_serial", "vk_token_tag"} <= keys
    text = page("reference/meta.md")
    missing = sorted(key for key in keys if not table_rows(text, key))
    assert not missing, f"docs/reference/meta.md has no row for {missing}"


# "vk/store/errors" or the constant part of f"vk/requests/{method}".
STAT_KEY = re.compile(r"""["'](vk/[a-z0-9_/]*)""")


def test_every_stat_is_in_the_stats_reference():
    keys = {key for line in source_lines() for key in STAT_KEY.findall(line)}
    assert {"vk/answers", "vk/execute/calls", "vk/requests/"} <= keys
    text = page("reference/stats.md")
    missing = sorted(key for key in keys if f"`{key}" not in text)
    assert not missing, f"docs/reference/stats.md does not name {missing}"
