"""The benchmark harness (testkit.offline): its figures and one real measured crawl."""

from __future__ import annotations

import pstats
import random
from pathlib import Path

import pytest

from fakevk import generate_dataset
from testkit.offline import _longest_gap, _max_in_window, crawl_offline

REPO = Path(__file__).resolve().parent.parent


def test_max_in_window_counts_a_half_open_second():
    assert _max_in_window([]) == 0
    assert _max_in_window([5.0]) == 1
    # 1.0 is a second after 0.0: not in the same window, but 0.5, 0.99 and 1.0 are
    assert _max_in_window([0.0, 0.5, 0.99, 1.0]) == 3
    assert _max_in_window([0.0, 0.0, 0.0, 2.0]) == 3


def test_max_in_window_matches_counting_every_window():
    rng = random.Random(3)
    for _ in range(50):
        times = sorted(round(rng.uniform(0, 5), 2) for _ in range(rng.randint(1, 40)))
        brute = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
        assert _max_in_window(times) == brute


def test_longest_gap_and_when_it_began():
    assert _longest_gap([]) == (0.0, 0.0)
    assert _longest_gap([1.0]) == (0.0, 0.0)
    assert _longest_gap([10.0, 10.5, 14.0, 14.2]) == (3.5, 0.5)


@pytest.mark.integration
def test_a_measured_crawl_with_two_tokens_and_the_profile(tmp_path):
    dataset = generate_dataset(
        seed=5, groups=2, posts_per_group=3, max_comments=15, closed_comments=False
    )
    profile = tmp_path / "crawl.prof"
    result = crawl_offline(
        dataset,
        rate_limit=3,
        database_url=f"sqlite:///{tmp_path / 'bench.sqlite3'}",
        workdir=REPO,
        extra_settings={"VK_REQUESTS_PER_SECOND": "3"},
        tokens=2,
        profile=profile,
    )
    assert result["exit_code"] == 0, result["crawl_log_tail"]
    assert result["package_file"] == str(REPO / "vkscraper" / "__init__.py")
    # read from the database, not from the crawl's own metrics
    assert result["stored_comments"] == result["expected_comments"] > 0
    assert result["tokens"] == 2 and result["per_token"]
    assert result["error_6"] == 0
    assert result["max_per_token_in_any_1s_window"] <= 3
    share = result["rate_share"]
    assert share == (result["requests"] - 1) / (result["span_seconds"] * 3 * 2)
    assert 0 < share <= 1
    assert 0 < result["longest_gap_seconds"] <= result["span_seconds"]
    assert result["cpu_us_per_comment"] == (
        1e6 * result["crawler_cpu_seconds"] / result["expected_comments"]
    )
    # the main thread's profile and the pool threads' (the store's writes)
    main = {f"{path}:{name}" for path, _, name in pstats.Stats(str(profile)).stats}  # type: ignore[attr-defined]
    assert any("scrapy/core/engine.py" in f for f in main)
    threads = pstats.Stats(f"{profile}.threads").stats  # type: ignore[attr-defined]
    assert any(name == "upsert_comments" for _, _, name in threads)
