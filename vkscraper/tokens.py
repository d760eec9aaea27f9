"""Access tokens: read from the environment only, identified in logs by a non-reversible tag."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping

TOKEN_ENV = "VK_ACCESS_TOKEN"


def load_tokens(environ: Mapping[str, str] | None = None) -> list[str]:
    """``VK_ACCESS_TOKEN``: one token, or several separated by commas (a pool)."""
    raw = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    return [t.strip() for t in raw.split(",") if t.strip()]


def token_tag(token: str) -> str:
    """A short tag that names a token in logs, stats and download slots without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def scrub(text: str, tokens: Iterable[str]) -> str:
    """Replace every token occurring in ``text`` (e.g. an exception from a library)."""
    for token in tokens:
        if token:
            text = text.replace(token, f"<token {token_tag(token)}>")
    return text
