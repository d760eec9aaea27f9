"""The call builder and envelope parsing: every error class, malformed bodies, no secrets."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from scrapy import FormRequest

from vkscraper.exceptions import (
    FATAL_CODES,
    TARGET_CODES,
    TRANSIENT_CODES,
    VkApiError,
    VkApiTransientError,
    VkCaptchaError,
    VkError,
    VkFatalError,
    VkMalformedResponse,
    VkQuotaError,
    VkTargetError,
    VkTransientError,
)
from vkscraper.vk import api


def test_build_call_url_version_and_encoding():
    call = api.build_call(
        "wall.get",
        {"owner_id": -1, "count": 11, "extended": True, "fields": ["a", "b"], "skip": None},
        api_url="http://127.0.0.1:9/method",
        version="5.199",
    )
    assert call.url == "http://127.0.0.1:9/method/wall.get"
    assert call.params == {
        "owner_id": "-1",
        "count": "11",
        "extended": "1",
        "fields": "a,b",
        "v": "5.199",
    }
    # The spider sends the params as the form body of a POST.
    request = FormRequest(call.url, formdata=call.params)
    assert parse_qs(request.body.decode()) == {k: [v] for k, v in call.params.items()}


def test_build_call_defaults_to_vk_ru_and_5_199():
    call = api.build_call("groups.getById", {"group_ids": [1]})
    assert call.url == "https://api.vk.ru/method/groups.getById"
    assert call.params["v"] == "5.199"


def test_build_call_refuses_a_token_in_params():
    with pytest.raises(ValueError, match="download time"):
        api.build_call("wall.get", {"access_token": "x"})


@pytest.mark.parametrize("group_id", [0, -5])
def test_owner_id_needs_positive_group_id(group_id):
    with pytest.raises(ValueError):
        api.owner_id_for_group(group_id)


def test_owner_id_is_negative_group_id():
    assert api.owner_id_for_group(42) == -42
    assert api.wall_get_params(42, count=11) == {"owner_id": -42, "count": 11}


def test_get_comments_params_have_the_parameters_that_matter():
    top = api.wall_get_comments_params(7, 3)
    assert top["owner_id"] == -7 and top["post_id"] == 3
    assert top["count"] == 100 and top["preview_length"] == 0 and top["need_likes"] == 1
    assert top["thread_items_count"] == 10 and top["extended"] == 1
    assert top["comment_id"] is None
    assert top["start_comment_id"] is None and top["sort"] == "asc"
    assert "offset" not in top  # VK's default (0), as the execute script sends it
    thread = api.wall_get_comments_params(7, 3, comment_id=9, start_comment_id=20)
    assert thread["comment_id"] == 9 and thread["start_comment_id"] == 20
    assert thread["thread_items_count"] is None  # only meaningful on the top level


def test_parse_response_returns_the_response():
    assert api.parse_response(b'{"response": {"count": 0, "items": []}}') == {
        "count": 0,
        "items": [],
    }
    assert api.parse_response('{"response": []}') == []


def _error(code, msg="boom", params=True):
    body = {"error_code": code, "error_msg": msg}
    if params:
        body["request_params"] = [
            {"key": "access_token", "value": "SECRET-TOKEN"},
            {"key": "owner_id", "value": "-1"},
        ]
    return json.dumps({"error": body}).encode()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        *[(c, VkApiTransientError) for c in sorted(TRANSIENT_CODES)],
        (29, VkQuotaError),
        (14, VkCaptchaError),
        *[(c, VkTargetError) for c in sorted(TARGET_CODES)],
        *[(c, VkFatalError) for c in sorted(FATAL_CODES)],
        (424242, VkApiError),
    ],
)
def test_every_error_code_maps_to_its_class(code, cls):
    with pytest.raises(VkApiError) as info:
        api.parse_response(_error(code, "Some message"), "wall.get")
    exc = info.value
    assert type(exc) is cls
    assert (exc.code, exc.message, exc.method) == (code, "Some message", "wall.get")
    assert str(exc) == f"VK error {code} in wall.get: Some message"
    assert "SECRET-TOKEN" not in str(exc) and "request_params" not in str(exc)
    assert "owner_id" not in str(exc)


def test_transient_api_errors_are_both_api_and_transient_errors():
    with pytest.raises(VkTransientError):
        api.parse_response(_error(6))
    with pytest.raises(VkApiError):
        api.parse_response(_error(10))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"response": {"count": 3, "items": [',  # truncated
        b"[1, 2]",
        b'{"something": 1}',
        b'{"error": "nope"}',
        b'{"error": {"error_msg": "no code"}}',
        b"\xff\xfe garbage",
    ],
)
def test_malformed_bodies_are_transient(body):
    with pytest.raises(VkMalformedResponse) as info:
        api.parse_response(body, "wall.getComments")
    assert isinstance(info.value, VkTransientError) and isinstance(info.value, VkError)
    assert "wall.getComments" in str(info.value)


def test_groups_get_by_id_params_join_refs():
    assert api.groups_get_by_id_params([1, "apiclub"])["group_ids"] == ["1", "apiclub"]


def test_a_lone_surrogate_becomes_a_replacement_character():
    """orjson refuses a lone surrogate; json's fallback would keep one, which no UTF-8
    encoder (so no database driver) takes."""
    body = b'{"response": {"items": [{"id": 1, "text": "a\\ud83d"}], "x\\udfff": ["\\udfff"]}}'
    data = api.parse_response(body)
    assert data == {"items": [{"id": 1, "text": "a\ufffd"}], "x\ufffd": ["\ufffd"]}
    assert api.parse_response('{"response": "\\ud83d\\ude00"}') == "😀"  # a pair is kept
