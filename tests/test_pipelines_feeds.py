"""The item pipeline shape (normalize → store → task metrics, with room for a user's own
pipelines) and feed exports that hold each post and comment once, in UTF-8, CSV included."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk
from tests.helpers.crawl import T0, TOKEN, last_task, run_crawl, small_dataset, stored_rows
from vkscraper.items import VkComment, VkPage, VkPost
from vkscraper.store import open_store

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)


def cyrillic_dataset():
    data = small_dataset()
    data["groups"][1]["posts"][0]["text"] = "Привет, мир 😀"
    data["groups"][1]["posts"][1]["comments"][0]["text"] = "Ответ: да"
    return data


def docs_pipeline_example() -> type:
    """The user pipeline the docs show, taken from docs/usage/pipelines.md itself."""
    page = Path(__file__).parent.parent / "docs" / "usage" / "pipelines.md"
    text = page.read_text(encoding="utf-8")
    block = text.split("# myproject/pipelines.py\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("docs_pipelines")
    exec(compile(block, str(page), "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    return module.DropAuthorComments


class Seen:
    """Records what reaches it: placed between normalize and store."""

    items: list = []

    def process_item(self, item):
        Seen.items.append((type(item), [type(r) for r in item.rows]))
        return item


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_the_docs_pipeline_drops_one_authors_comments_before_the_store(store_url):
    drop = docs_pipeline_example()
    data = small_dataset()
    data["profiles"].append({"id": 2, "first_name": "Bob", "last_name": "Ray"})
    data["groups"][1]["posts"][1]["comments"].append(
        {"id": 30, "from_id": 2, "date": T0, "text": "kept", "likes": 0, "replies": []}
    )
    for comment in data["groups"][1]["posts"][1]["comments"]:
        comment["replies"] = [{"id": 40 + comment["id"], "from_id": 1, "date": T0, "text": "r"}]
    Seen.items = []
    pipes = {"ITEM_PIPELINES": {"docs_pipelines.DropAuthorComments": 200,
                                f"{__name__}.Seen": 250}}  # fmt: skip
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts", settings=pipes)
    # Pages of normalized rows reach a pipeline between normalize and store.
    assert {kind for kind, _ in Seen.items} == {VkPage}
    assert {t for _, rows in Seen.items for t in rows} == {VkPost, VkComment}
    task = last_task(store_url)
    # A filter's choice is on purpose: the group still finishes, and completes.
    assert task.status == "completed", task.metrics["errors"]
    _, comments = stored_rows(store_url, task.id)
    assert drop.author_id == 1
    assert [(c["vk_comment_id"], c["author_id"]) for c in comments] == [(30, 2)]


class Explode:
    def process_item(self, item):
        if isinstance(item, VkPage) and item.kind == "comments":
            raise RuntimeError("sink down")
        return item


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_a_failing_pipeline_fails_the_group_with_a_named_error(store_url):
    pipes = {"ITEM_PIPELINES": {f"{__name__}.Explode": 200}}
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts", settings=pipes)
    task = last_task(store_url)
    assert task.status == "failed"
    assert task.metrics["groups"]["11"]["status"] == "failed"
    assert (
        task.metrics["errors"]
        == ["group 11: an item pipeline failed: RuntimeError('sink down')"]  # once, not per page
    )


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_one_malformed_comment_is_dropped_and_named_the_page_is_kept(store_url):
    data = small_dataset()
    data["groups"][1]["posts"][1]["comments"].append(
        {"id": 30, "from_id": 1, "date": 10**30, "text": "bad date", "likes": 0, "replies": []}
    )
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    task = last_task(store_url)
    assert task.metrics["errors"] == [
        "group 11 post 2 comment 30: bad unixtime 1e+30"  # orjson reads 10**30 as a float
    ]
    _, comments = stored_rows(store_url, task.id)
    assert sorted(c["vk_comment_id"] for c in comments) == [11, 12, 13]


@deferred_f_from_coro_f
async def test_a_malformed_comment_fails_its_own_group_and_leaves_its_post_incomplete(store_url):
    """The error goes to the real group (11, owner -11): the group fails, and its post is not
    complete, so a comment an earlier run stored is not marked deleted for being unread."""
    data = small_dataset()
    comments = data["groups"][1]["posts"][1]["comments"]
    comments.append({"id": 30, "from_id": 1, "date": T0, "text": "ok", "likes": 0, "replies": []})
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    assert last_task(store_url).status == "completed"

    comments[-1]["date"] = 10**30  # the same comment, now sent malformed
    with FakeVk(data, tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts")
    task = last_task(store_url)
    assert task.status == "failed"
    assert set(task.metrics["groups"]) == {"11"}
    assert task.metrics["groups"]["11"]["status"] == "failed"
    assert task.metrics["groups"]["11"]["errors"] == task.metrics["errors"]
    with open_store(store_url) as store:
        deleted = store._run("read", lambda cur: (
            cur.execute("SELECT vk_comment_id, deleted FROM comments WHERE owner_id = -11"),
            {r[0]: bool(r[1]) for r in cur.fetchall()})[1])  # fmt: skip
    assert deleted == {11: False, 12: False, 13: False, 30: False}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@deferred_f_from_coro_f
async def test_feeds_hold_each_item_once_in_utf8_csv_included(store_url, tmp_path):
    feeds = {
        str(tmp_path / "all.jsonl"): {"format": "jsonlines"},
        str(tmp_path / "all.csv"): {"format": "csv"},
        str(tmp_path / "posts.csv"): {"format": "csv", "item_classes": [VkPost]},
        str(tmp_path / "comments.jsonl"): {"format": "jsonlines", "item_classes": [VkComment]},
    }
    with FakeVk(cyrillic_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts,club12", settings={"FEEDS": feeds})
    posts, comments = stored_rows(store_url, last_task(store_url).id)

    text = (tmp_path / "all.jsonl").read_text(encoding="utf-8")
    assert "Привет, мир 😀" in text and "\\u" not in text  # UTF-8, not escapes
    rows = [json.loads(line) for line in text.splitlines()]
    assert sorted(r["kind"] for r in rows) == ["comment"] * len(comments) + ["post"] * len(posts)
    keys = {(r["kind"], r["owner_id"], r.get("vk_post_id") or r["vk_comment_id"]) for r in rows}
    assert len(keys) == len(rows)  # each item once (no anchor repeats, no markers)

    with (tmp_path / "all.csv").open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows)
    first_comment = next(r for r in table if r["kind"] == "comment")
    for field in ("vk_comment_id", "post_vk_id", "parent_id", "author_id", "author_name"):
        assert field in first_comment
    assert first_comment["vk_comment_id"] and first_comment["author_name"]
    assert any(r["text"] == "Привет, мир 😀" for r in table)

    with (tmp_path / "posts.csv").open(encoding="utf-8", newline="") as fh:
        assert {r["kind"] for r in csv.DictReader(fh)} == {"post"}
    only = [json.loads(line) for line in (tmp_path / "comments.jsonl").read_text().splitlines()]
    assert len(only) == len(comments) and {r["kind"] for r in only} == {"comment"}


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
@deferred_f_from_coro_f
async def test_scraped_items_are_logged_only_when_the_log_level_shows_them(
    sqlite_url, caplog, level
):
    # Scrapy would build (and the token scrubber scan) one DEBUG record per item even at INFO.
    import logging

    caplog.set_level(logging.DEBUG)
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, sqlite_url, groups="threeposts", settings={"LOG_LEVEL": level})
    scraped = [r for r in caplog.records if r.getMessage().startswith("Scraped from")]
    assert bool(scraped) == (level == "DEBUG")
