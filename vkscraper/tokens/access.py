"""Access tokens: read from the environment only, identified in logs by a non-reversible tag."""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

TOKEN_ENV = "VK_ACCESS_TOKEN"


def load_tokens(environ: Mapping[str, str] | None = None) -> list[str]:
    """``VK_ACCESS_TOKEN``: one token, or several separated by commas (a pool)."""
    raw = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    return [t.strip() for t in raw.split(",") if t.strip()]


# Real VK tokens are 64 characters and more; anything this short is a typo or a placeholder,
# and scrubbing it from logs would blank out ordinary words.
MIN_TOKEN_LENGTH = 16


def check_tokens(tokens: list[str]) -> str | None:
    """Why the tokens cannot be used (a message that never shows a token), or None."""
    if not tokens:
        return f"{TOKEN_ENV} is not set: export a user or service token to crawl"
    for n, token in enumerate(tokens, 1):
        if len(token) < MIN_TOKEN_LENGTH or re.search(r"\s", token):
            which = f"token {n} of {len(tokens)}" if len(tokens) > 1 else "the token"
            return (
                f"{TOKEN_ENV}: {which} ({len(token)} characters) does not look like a VK "
                f"access token (at least {MIN_TOKEN_LENGTH} characters, no spaces)"
            )
    return None


def token_tag(token: str) -> str:
    """A short tag that names a token in logs, stats and download slots without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=64)  # called for every log record
def token_forms(token: str) -> frozenset[str]:
    """The token as it may appear in text: plain, and percent-encoded the ways URLs and form
    bodies encode it (``quote``, ``quote_plus``), with upper- or lower-case escapes."""
    encoded = {quote(token), quote(token, safe=""), quote_plus(token)}
    lower = {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded}
    return frozenset({token} | encoded | lower)


def scrub(text: str, tokens: Iterable[str]) -> str:
    """Replace every token occurring in ``text`` (e.g. an exception from a library).

    Every occurrence of every form of every token is found first and overlapping ones are
    merged, so the result does not depend on the order of ``tokens`` and no part of a token
    survives when one token is a prefix (or any substring) of another. A merged run is named by
    its longest match.
    """
    spans: list[tuple[int, int, str]] = []
    for token in tokens:
        for form in token_forms(token) if token else ():
            start = text.find(form)
            while start != -1:
                spans.append((start, start + len(form), token))
                start = text.find(form, start + 1)
    if not spans:
        return text
    spans.sort()
    out: list[str] = []
    done = 0  # text[:done] is already in out
    i = 0
    while i < len(spans):
        start, end, token = spans[i]
        longest = end - start
        i += 1
        while i < len(spans) and spans[i][0] < end:  # overlaps the run: extend it
            if spans[i][1] - spans[i][0] > longest:
                longest, token = spans[i][1] - spans[i][0], spans[i][2]
            end = max(end, spans[i][1])
            i += 1
        out.append(text[done:start])
        out.append(f"<token {token_tag(token)}>")
        done = end
    out.append(text[done:])
    return "".join(out)
