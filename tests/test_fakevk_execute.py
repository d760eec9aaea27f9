"""The emulator's ``execute``: VKScript really runs (QuickJS), inner calls go to the same
method handlers as plain calls, failures are ``false`` + ``execute_errors`` in order, and the
25-call, 5 MB, compile and runtime limits give VK's errors 12 and 13."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from fakevk import FakeVk, generate_dataset
from fakevk.vkscript import ScriptError, translate
from tests.helpers.emulator import TOKEN, big_post, by_flag, call, err, first_group, ok

pytestmark = pytest.mark.integration

SERVICE_TOKEN = "service-token-0123456789abcdef"


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    return generate_dataset(seed=3, big_post=True, closed_groups=2)


@pytest.fixture(scope="module")
def vk(data: dict[str, Any]) -> Iterator[FakeVk]:
    with FakeVk(data, tokens=[TOKEN, SERVICE_TOKEN], no_execute_tokens=[SERVICE_TOKEN],
                execute_max_bytes=200_000) as server:  # fmt: skip
        yield server


def execute(vk: FakeVk, code: str, **args: Any) -> dict[str, Any]:
    return call(vk, "execute", code=code, **args)


def raw(vk: FakeVk, method: str, **params: Any) -> bytes:
    """The answer's bytes as sent."""
    encoded = urllib.parse.urlencode({"v": "5.199", "access_token": TOKEN, **params}).encode()
    with urllib.request.urlopen(vk.url + method, data=encoded, timeout=10) as resp:
        return bytes(resp.read())


def test_a_batch_equals_the_plain_calls_and_failures_are_false_in_order(vk, data):
    group = first_group(data)
    closed = by_flag(data, wall=0)
    params = {"owner_id": -group["id"], "count": 3}
    body = execute(
        vk,
        f"return [API.wall.get({json.dumps(params)}), "
        f'API.wall.get({{"owner_id": -{closed["id"]}}}), '
        'API.groups.getById({"group_ids": Args.ids}), API.no.such({})];',
        ids=str(group["id"]),
    )
    plain_wall = ok(vk, "wall.get", **params)
    plain_group = ok(vk, "groups.getById", group_ids=str(group["id"]))
    assert body["response"] == [plain_wall, False, plain_group, False]
    assert body["execute_errors"] == [
        {"method": "wall.get", "error_code": 15, "error_msg": err(vk, "wall.get",
         owner_id=-closed["id"])["error_msg"]},
        {"method": "no.such", "error_code": 3, "error_msg": "Unknown method passed"},
    ]  # fmt: skip
    log = [r for r in vk.requests() if r["method"] == "execute"][-1]
    assert log["method"] == "execute" and log["calls"] == [
        "wall.get", "wall.get", "groups.getById", "no.such"
    ] and log["execute_errors"] == 2  # fmt: skip


def test_pages_chained_inside_one_script_equal_plain_anchored_paging(vk, data):
    """The pattern the crawler needs: the next anchor comes from the page just read."""
    group, post = big_post(data)
    base = {"owner_id": -group["id"], "post_id": post["id"], "count": 100, "preview_length": 0}
    code = """
        var params = {"owner_id": parseInt(Args.owner), "post_id": parseInt(Args.post),
                      "count": 100, "preview_length": 0};
        var page = API.wall.getComments(params);
        var ids = page.items@.id;
        var calls = 1;
        while (page.items.length == 100 && calls < 25) {
            params.start_comment_id = page.items[page.items.length - 1].id;
            page = API.wall.getComments(params);
            var more = page.items.slice(1)@.id;
            var j = 0;
            while (j < more.length) { ids.push(more[j]); j = j + 1; }
            calls = calls + 1;
        }
        return {"ids": ids, "total": page.current_level_count, "calls": calls};
    """
    body = execute(vk, code, owner=str(base["owner_id"]), post=str(base["post_id"]))
    plain: list[int] = []
    page = ok(vk, "wall.getComments", **base)
    plain += [c["id"] for c in page["items"]]
    while len(page["items"]) == 100:
        page = ok(vk, "wall.getComments", **base, start_comment_id=plain[-1])
        plain += [c["id"] for c in page["items"][1:]]
    assert body["response"]["ids"] == plain
    assert len(plain) == body["response"]["total"] > 100
    assert body["response"]["calls"] >= 2
    assert "execute_errors" not in body


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        ("return [1, 2", 12, "Unable to compile code"),
        ("var f = function () { return 1; }; return f();", 12, "functions are not allowed"),
        ("var r = API.wall.get({\"owner_id\": -1}); return r.items.slice(1);", 13,
         "Runtime error occurred during code invocation"),
        ("var i = 0; while (i < 26) { API.utils.resolveScreenName({\"screen_name\": \"x\"}); "
         "i = i + 1; } return i;", 13, "too many API calls"),
        ("while (true) { } return 1;", 13, "too many operations"),
        ("return [1] + [2];", 13, "join arrays with push"),
    ],
)  # fmt: skip
def test_script_errors_fail_the_whole_call(vk, code, error, words):
    failure = err(vk, "execute", code=code)
    assert failure["error_code"] == error and words in failure["error_msg"], failure


def test_25_calls_are_allowed(vk):
    code = ("var i = 0; var out = []; while (i < 25) { "
            "out.push(API.utils.resolveScreenName({\"screen_name\": \"nobody\"})); i = i + 1; } "
            "return out.length;")  # fmt: skip
    assert ok(vk, "execute", code=code) == 25


def test_an_answer_over_the_size_limit_is_error_13(vk, data):
    group, post = big_post(data)
    one_page = (
        f'API.wall.getComments({{"owner_id": -{group["id"]}, "post_id": {post["id"]}, '
        '"count": 100, "preview_length": 0})'
    )
    assert "response" in call(vk, "execute", code=f"return [{one_page}];")
    failure = err(vk, "execute", code=f"return [{', '.join([one_page] * 25)}];")
    assert failure["error_code"] == 13 and "response size is too big" in failure["error_msg"]


def test_a_token_without_execute_gets_error_28_and_plain_calls_still_work(vk, data):
    failure = err(vk, "execute", code="return 1;", token=SERVICE_TOKEN)
    assert failure["error_code"] == 28
    assert "response" in call(vk, "wall.get", owner_id=-first_group(data)["id"],
                              token=SERVICE_TOKEN)  # fmt: skip


def test_one_execute_is_one_request_against_the_rate_limit(data):
    code = ("var i = 0; while (i < 25) { API.utils.resolveScreenName({\"screen_name\": \"n\"}); "
            "i = i + 1; } return i;")  # fmt: skip
    for _attempt in range(3):
        with FakeVk(data, tokens=[TOKEN], rate_limit=3) as vk:
            time.sleep(1.1)
            answers = [call(vk, "execute", code=code) for _ in range(4)]
            arrivals = [e["t"] for e in vk.requests() if e["method"] == "execute"]
        if arrivals[3] - arrivals[0] >= 1.0:
            continue  # a loaded machine spread the four over a second: nothing to judge
        assert [a.get("response") for a in answers[:3]] == [25, 25, 25]
        assert answers[3]["error"]["error_code"] == 6
        return
    pytest.fail("four executes never came within one second (server clock) in three tries")


def test_inner_transient_faults_are_false_with_error_10(data):
    group = first_group(data)
    calls = ", ".join(
        f'API.wall.get({{"owner_id": -{group["id"]}, "count": {n}}})' for n in range(1, 26)
    )
    with FakeVk(data, tokens=[TOKEN], faults="error10:0.5", seed=5) as vk:
        for _ in range(10):  # the outer request may draw a fault of its own
            body = call(vk, "execute", code=f"return [{calls}];")
            if "response" in body:
                break
    failed = [i for i, r in enumerate(body["response"]) if r is False]
    assert failed and len(failed) < 25
    assert body["execute_errors"] == [
        {"method": "wall.get", "error_code": 10, "error_msg": "Internal server error"}
    ] * len(failed)


def test_translation_rewrites_api_calls_and_pluck_only():
    js = translate('var a = API.wall.get({"x": 1}); return a.items@.id + [Args.k];')
    assert '__api("wall.get", {"x": 1})' in js and '__pluck(a.items, "id")' in js
    with pytest.raises(ScriptError):
        translate("var f = (x) => x; return 1;")


def test_answers_the_script_reads_or_changes_are_as_javascript_has_them(vk, data):
    """Answers reach the script through proxies, their comments parsed when first read, and
    unchanged answers are written from the JSON sent: what the script changed, took apart or
    put together must come out as plain JavaScript objects would."""
    group, post = big_post(data)
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 5,
              "preview_length": 0, "extended": 1, "thread_items_count": 2}  # fmt: skip
    page = ok(vk, "wall.getComments", **params)
    q = f"API.wall.getComments({json.dumps(params)})"
    body = execute(
        vk,
        f"var a = {q}; var b = {q}; var c = {q}; var d = {q}; var e = {q};"
        "a.items[0].text = 'changed'; c.items.push(b.items[4]); d.profiles = [];"
        "var o = {}; e.x = o; o.y = 1;"
        "return [a, b, c, d, e, b.items[1], b.items@.id, Object.keys(e.items[2]),"
        " JSON.stringify(b.items[3]) == JSON.stringify(a.items[3]),"
        " b.items[0] === b.items[0], a === b, e.x === o];",
    )
    changed = json.loads(json.dumps(page))
    changed["items"][0]["text"] = "changed"
    pushed = {**page, "items": [*page["items"], page["items"][4]]}
    assert body["response"] == [
        changed, page, pushed, {**page, "profiles": []}, {**page, "x": {"y": 1}},
        page["items"][1], [c["id"] for c in page["items"]], list(page["items"][2]),
        True, True, False, True,
    ]  # fmt: skip
    # the whole answer byte for byte: unchanged answers are written from their JSON
    one = raw(vk, "wall.getComments", **params)[len(b'{"response":') : -1]
    assert raw(vk, "execute", code=f"return [{q}, {q}];") == b'{"response":[%s,%s]}' % (one, one)


def test_data_javascript_cannot_hold_exactly_is_passed_as_before(data):
    """A float or an integer past 2**53 in the dataset: answers go through QuickJS whole
    (JavaScript writes 1.0 as 1 and rounds big integers, as VK's own answers would)."""
    odd = json.loads(json.dumps(data))
    group, post = big_post(odd)
    post["comments"][0]["likes"] = 2.0
    post["comments"][1]["likes"] = 2**60 + 1
    params = {"owner_id": -group["id"], "post_id": post["id"], "count": 3, "need_likes": 1}
    with FakeVk(odd, tokens=[TOKEN]) as server:
        page = ok(server, "wall.getComments", **params)
        answer = ok(server, "execute", code=f"return API.wall.getComments({json.dumps(params)});")
    assert [c["likes"]["count"] for c in page["items"][:2]] == [2.0, 2**60 + 1]
    # as JavaScript writes them: 2.0 is 2, and 2**60 + 1 the shortest form of the nearest double
    assert [c["likes"]["count"] for c in answer["items"][:2]] == [2, 1152921504606847000]
    assert isinstance(answer["items"][0]["likes"]["count"], int)
    assert answer["items"][2:] == page["items"][2:]
