"""The emulator's JSON: ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` in
UTF-8, with parts encoded apart (:class:`Encoded`) and inserted as they are.

A page of comments is encoded as its envelope plus one part per comment (and per author), so
that ``execute`` can hand QuickJS the parts to parse only when the script looks into them (see
:mod:`.vkscript`). The parts go in through placeholders: ``json.dumps`` writes each as a
string holding a marker, which is then replaced by the part's bytes. A marker holds a random
per-process nonce and never leaves the process, so no string of the data or of a request can
pass for one.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import orjson

_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
_NONCE = secrets.token_hex(8)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SAFE_INT = 2**53  # beyond it JavaScript's numbers round


class Encoded:
    """A JSON value already encoded, for :func:`encode` to insert as it is."""

    __slots__ = ("json",)

    def __init__(self, json: bytes) -> None:
        self.json = json


def marker_prefix(tag: str) -> str:
    """A marker of ``tag`` is this, the part's number and ``@``."""
    return f"@{_NONCE}{tag}"


def marker_pattern(tag: str) -> re.Pattern[bytes]:
    """Markers of ``tag`` as they look once encoded (quotes included); group 1 the number."""
    return re.compile(f'"{marker_prefix(tag)}([0-9]+)@"'.encode())


def splice(
    data: bytes, pattern: re.Pattern[bytes], part: Sequence[bytes] | Callable[[int], bytes]
) -> bytes:
    """``data`` with every encoded marker of ``pattern`` replaced by part number n."""
    get = part.__getitem__ if isinstance(part, Sequence) else part
    return pattern.sub(lambda m: get(int(m.group(1))), data)


# A part's marker also tells what the part is: o(bject), a(rray) or v(alue).
PART_PREFIX = marker_prefix("p")
_PART = re.compile(f'"{PART_PREFIX}[oav]([0-9]+)@"'.encode())
_KINDS = {ord("{"): "o", ord("["): "a"}


def encode_parts(value: Any) -> tuple[bytes, list[bytes]]:
    """``value`` encoded with a marker for each :class:`Encoded` part, and those parts."""
    parts: list[bytes] = []

    def part(obj: Any) -> str:
        if not isinstance(obj, Encoded):
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
        parts.append(obj.json)
        return f"{PART_PREFIX}{_KINDS.get(obj.json[0], 'v')}{len(parts) - 1}@"

    return _dumps(value, default=part).encode("utf-8"), parts


def join_parts(envelope: bytes, parts: Sequence[bytes]) -> bytes:
    """What :func:`encode_parts` split: the whole JSON."""
    if not parts:
        return envelope
    # The markers come in the parts' order, each once: between the pieces of the split.
    pieces = _PART.split(envelope)
    pieces[1::2] = parts
    return b"".join(pieces)


def encode(value: Any) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` in UTF-8, with
    :class:`Encoded` parts inserted unchanged."""
    return join_parts(*encode_parts(value))


def encode_plain(value: Any) -> Encoded:
    """A part made of values :func:`plain` accepts. orjson writes those exactly as
    ``json.dumps`` does (compact, UTF-8, keys in order), some three times faster."""
    return Encoded(orjson.dumps(value))


def encode_any(value: Any) -> Encoded:
    return Encoded(_dumps(value).encode("utf-8"))


def plain(value: Any) -> bool:
    """Whether every leaf of ``value`` is an integer JavaScript holds exactly (below 2**53), a
    string without lone surrogates, a bool or None: then orjson writes it as ``json.dumps``
    does, and JavaScript's ``JSON.stringify(JSON.parse(text))`` gives back the very text (it
    would write ``1.0`` as ``1``, round big integers and escape lone surrogates). Keys are
    not checked: the emulator's objects have fixed, non-numeric ones (JavaScript would put
    ``"1"`` first)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return False
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -_SAFE_INT < item < _SAFE_INT:
                return False
        else:  # floats, and anything json.dumps would not take
            return False
    return True
