"""The emulator's JSON: parts encoded apart (orjson for plain data) give json.dumps's bytes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fakevk import generate_dataset
from fakevk.jsontext import (
    Encoded,
    encode,
    encode_any,
    encode_parts,
    encode_plain,
    join_parts,
    plain,
)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_parts_are_inserted_as_json_dumps_would_write_them():
    data = generate_dataset(seed=3, big_post=True)  # Cyrillic, emoji, a NUL, newlines
    comments = [c for g in data["groups"] for p in g["posts"] for c in p["comments"]]
    assert plain(data) and comments
    page = {"count": 3, "items": comments, "note": '\x00\u2028"\\', "empty": [{}, []]}
    parted = {**page, "items": [encode_plain(c) for c in comments]}
    assert encode(parted) == dumps(page)
    assert encode({**page, "items": [encode_any(c) for c in comments]}) == dumps(page)
    envelope, parts = encode_parts(parted)
    assert len(parts) == len(comments) and len(envelope) < 30 * len(parts) + 100
    assert join_parts(envelope, parts) == dumps(page)
    assert encode([Encoded(b"[1,2]"), Encoded(b'"x"'), 3]) == b'[[1,2],"x",3]'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, -(2**53) + 1, "ё🙂\x00", None, True]}, True),
        ({"a": [1.0]}, False),  # JavaScript writes 1
        ({"a": 2**53}, False),  # JavaScript rounds past 2**53
        ({"a": ["\ud800"]}, False),  # a lone surrogate: JavaScript escapes it
    ],
)
def test_plain_data_is_what_javascript_and_orjson_write_as_json_dumps_does(value, expected):
    assert plain(value) is expected
