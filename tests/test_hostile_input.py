"""Hostile input: property-based tests (hypothesis) over VK bodies and group references.

Every VK body becomes items or a VkError (which the spider records); a callback never crashes.
Group references are refused with a clear message or become a plain id or screen name — never
text that reaches SQL (the store only ever binds them as parameters)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scrapy.utils.defer import deferred_f_from_coro_f

from fakevk import FakeVk
from tests.helpers.crawl import TOKEN, last_task, run_crawl, small_dataset, stored_rows
from vkscraper.exceptions import VkError
from vkscraper.items import VkPage
from vkscraper.vk.api import parse_response
from vkscraper.vk.grouprefs import GroupRefError, parse_group_ref, parse_group_refs
from vkscraper.vk.normalize import (
    check_comments_page,
    latest_posts,
    normalize_comments,
    parse_groups,
    parse_posts,
    threads_to_fetch,
)

# JSON values of every type, with the numbers and strings that hurt: huge and negative
# numbers, NUL, lone surrogates are not JSON-encodable, so invalid UTF-8 comes as bytes below.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=50)
    | st.just("\x00")
    | st.just("😀" * 1000)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(
        st.sampled_from(["id", "items", "date", "text", "from_id", "likes", "thread", "count",
                         "current_level_count", "comments", "is_pinned", "deleted", "groups",
                         "profiles", "first_name", "name", "screen_name", "deactivated",
                         "is_closed", "views", "reposts", "signer_id", "edited",
                         "reply_to_user", "reply_to_comment", "x"]),
        children,
        max_size=8,
    ),
    max_leaves=30,
)  # fmt: skip

# Bodies shaped like VK's, with any value in any field.
item = st.fixed_dictionaries(
    {"id": st.integers(min_value=-(2**63), max_value=2**63)},
    optional={
        "date": scalars, "text": scalars, "from_id": scalars, "likes": json_values,
        "thread": json_values, "comments": json_values, "deleted": scalars,
        "is_pinned": scalars,
    },
)  # fmt: skip
page = st.fixed_dictionaries(
    {"items": st.lists(item | json_values, max_size=6)},
    optional={"count": scalars, "current_level_count": scalars, "profiles": json_values,
              "groups": json_values},
)  # fmt: skip

# Derandomized: CI runs the same 300 examples every time (a random run that finds a new bug
# belongs in a fix, not in a red CI for an unrelated change). To explore, set
# derandomize=False and raise max_examples: 8,000 random examples per test passed last time.
FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def comment_rows(data, group_id, post_id):
    """A comments page as the spider checks it and the normalize pipeline makes rows of it
    (a malformed comment is an error of its own, not a row)."""
    check_comments_page(data)
    rows, _ = normalize_comments(VkPage("comments", group_id, post_id, raw=data))
    return rows


def survives(fn, *args, **kwargs):
    """``fn`` returns, or raises a VkError (recorded by the spider); nothing else."""
    try:
        return fn(*args, **kwargs)
    except VkError:
        return None


@FAST
@given(body=json_values | page)
def test_normalizers_never_crash(body):
    posts = survives(parse_posts, body, 5)
    if posts is not None:
        assert all(p.owner_id == -5 and p.group_id == 5 for p in posts)
        latest_posts(posts, 10)
    comments = survives(comment_rows, body, 5, 77)
    if comments is not None:
        assert all(c.owner_id == -5 and c.post_vk_id == 77 for c in comments)
        assert all(isinstance(c.text, str) and isinstance(c.likes, int) for c in comments)
    survives(lambda: list(threads_to_fetch(body)))
    groups = survives(parse_groups, body)
    if groups is not None:
        assert all(isinstance(g.id, int) and g.id > 0 for g in groups)


@FAST
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_a_response_or_a_vk_error(raw):
    survives(parse_response, raw, "wall.getComments")


@pytest.mark.parametrize(
    "body",
    [
        b'{"response": {"items": [{"id": 1, "date": 99999999999999999999}]}}',
        b'{"response": {"items": [{"id": 1, "date": -1e300}]}}',
        b'{"response": {"items": [{"id": 1, "date": 1, "text": "a\\u0000b"}]}}',
        b'{"response": {"items": [{"id": 1, "date": 1, "likes": {"count": "9"}}]}}',
        b'{"response": {"items": [{"id": 1, "date": 1, "thread": {"items": [7]}}]}}',
        b'{"response": {"items": [{"id": 1, "date": 1, "thread": {"count": 1e9}}]}}',
        b'\xff\xfe{"response": 1}',
        b'{"response": {"items": [{"id": 1, "date": 1, "text": "' + b"x" * 2_000_000 + b'"}]}}',
    ],
)
def test_known_nasty_bodies(body):
    data = survives(parse_response, body, "wall.getComments")
    if data is not None:
        survives(comment_rows, data, 5, 77)
        survives(parse_posts, data, 5)


SQL_AND_LOOKALIKES = [
    "'; DROP TABLE posts;--",
    "apiclub'--",
    "аpiclub",  # Cyrillic а
    "club١٢٣",  # Arabic-Indic digits
    "١٢٣",
    "ｃｌｕｂ123",  # full-width
    "vk.com/apiclub/../../etc",
    "https://vk.com.evil.example/apiclub",
    "99999999999999999999999",
    "\x00apiclub",
    "apiclub\u200b",  # zero-width space
]


@pytest.mark.parametrize("raw", SQL_AND_LOOKALIKES)
def test_hostile_references_are_refused_clearly(raw):
    with pytest.raises(GroupRefError) as info:
        parse_group_ref(raw)
    assert str(info.value)  # a message that names the problem


@FAST
@given(raw=st.text(max_size=40))
def test_any_text_is_a_plain_reference_or_refused(raw):
    try:
        ref = parse_group_ref(raw)
    except GroupRefError:
        return
    if ref.group_id is not None:
        assert 0 < ref.group_id < 2**63
    else:
        assert ref.screen_name is not None
        assert ref.screen_name.isascii() and all(c.isalnum() or c in "_." for c in ref.screen_name)


def test_ten_thousand_references(store):
    refs = parse_group_refs(",".join(f"club{i}" for i in range(1, 10_001)))
    assert len(refs) == 10_000
    task_id = store.create_task(refs)
    assert store.get_task(task_id).metrics["groups_total"] == 10_000


NASTY_PAGES = [
    {"items": "not a list"},
    {"items": [{"id": "1"}]},
    {"items": [{"id": 5, "date": 10**30}]},
    {"items": [{"id": 5, "date": 1, "thread": {"count": "many", "items": [None]}}]},
    {"items": [{"id": 5, "date": 1, "text": "a\x00b 😀"}], "profiles": 7, "groups": "x"},
    None,
    [],
]


class NastyComments:
    """Answers every wall.getComments with one of NASTY_PAGES (in turn)."""

    served = 0

    def process_response(self, request, response):
        if request.meta.get("vk_method") != "wall.getComments":
            return response
        body = NASTY_PAGES[NastyComments.served % len(NASTY_PAGES)]
        NastyComments.served += 1
        return response.replace(body=json.dumps({"response": body}).encode())


@pytest.mark.integration
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("start", range(len(NASTY_PAGES)))
@deferred_f_from_coro_f
async def test_a_crawl_turns_nasty_bodies_into_errors_never_crashes(store_url, start, monkeypatch):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    NastyComments.served = start
    nasty = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.NastyComments": 560}, "RETRY_TIMES": 0}
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        crawler = await run_crawl(vk.url, store_url, groups="threeposts", settings=nasty)
    assert crawler.stats.get_value("spider_exceptions/count") is None  # no callback crashed
    task = last_task(store_url)
    m = task.metrics
    assert m["groups_done"] == m["groups_total"] == 1  # the group finished, with what it got
    assert m["posts"] == 3
    # Each post's comments page became stored rows or an error naming the post.
    _, comments = stored_rows(store_url, task.id)
    for post in (1, 2, 3):
        named = any(f"post {post}" in e for e in m["errors"])
        stored = any(c["post_vk_id"] == post for c in comments)
        assert named or stored, (post, m["errors"])
    assert task.status == ("failed" if m["errors"] else "completed")


def test_a_thread_whose_items_are_not_a_list():
    """Found by hypothesis: ``thread.items`` true instead of a list crashed the paging."""
    survives(lambda: list(threads_to_fetch({"items": [{"id": 1, "thread": {"items": True}}]})))
    assert list(threads_to_fetch({"items": [{"id": 1, "thread": {"items": 5, "count": 3}}]})) == [
        (1, 3, 0, None)
    ]


class Rewrite:
    """Replaces bytes in VK's answers (``Rewrite.swaps``): what the emulator cannot send."""

    swaps: list[tuple[bytes, bytes]] = []

    def process_response(self, request, response):
        body = response.body
        for old, new in Rewrite.swaps:
            body = body.replace(old, new)
        return response.replace(body=body)


async def crawl_rewritten(store_url, monkeypatch, tmp_path, swaps):
    monkeypatch.setenv("VK_ACCESS_TOKEN", TOKEN)
    monkeypatch.setattr(Rewrite, "swaps", swaps)
    settings = {"DOWNLOADER_MIDDLEWARES": {f"{__name__}.Rewrite": 560},
                "VK_UNSAVED_DIR": str(tmp_path)}  # fmt: skip
    with FakeVk(small_dataset(), tokens=[TOKEN]) as vk:
        await run_crawl(vk.url, store_url, groups="threeposts", settings=settings)
    task = last_task(store_url)
    _, comments = stored_rows(store_url, task.id)
    return task, {c["vk_comment_id"]: c for c in comments}


@pytest.mark.integration
@deferred_f_from_coro_f
async def test_a_lone_surrogate_from_vk_is_stored_as_a_replacement_character(
    store_url, monkeypatch, tmp_path
):
    """VK cuts text inside an emoji's surrogate pair: ``"\\ud83d"`` alone is valid JSON, not
    valid UTF-8. The comment is stored (U+FFFD in its place) and so are its neighbours;
    before, the batch failed to encode on every attempt and none of it was stored."""
    swaps = [(b'"c12"', b'"c\\ud83d"'), (b'"Ann"', b'"A\\udfffnn"')]
    task, comments = await crawl_rewritten(store_url, monkeypatch, tmp_path, swaps)
    assert task.status == "completed", task.metrics["errors"]
    assert sorted(comments) == [11, 12, 13]
    assert comments[12]["text"] == "c\ufffd"
    assert comments[12]["author_name"] == "A\ufffdnn Lee"


@pytest.mark.integration
@deferred_f_from_coro_f
async def test_an_id_beyond_bigint_is_a_named_error_not_a_stuck_batch(
    store_url, monkeypatch, tmp_path
):
    """orjson reads up to 2**64 - 1 as an int: a comment id above BIGINT is that comment's
    error; its neighbours are stored (before, the batch failed on every attempt)."""
    swaps = [(b'"id":12,', b'"id":9223372036854775808,')]
    task, comments = await crawl_rewritten(store_url, monkeypatch, tmp_path, swaps)
    assert sorted(comments) == [11, 13]
    assert task.status == "failed"
    (error,) = task.metrics["errors"]
    assert error.startswith("group 11 post 2 comment 9223372036854775808:"), error
