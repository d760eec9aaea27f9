"""The pure part of execute batching: the script's code, the mapping of its answer, the
planner's batches. The scripts themselves run in the emulator's VKScript engine here."""

from __future__ import annotations

import pytest

from fakevk import vkscript
from vkscraper.exceptions import VkApiTransientError, VkMalformedResponse, VkTargetError
from vkscraper.vk.execute import CommentsUnit, PageParams, WallUnit, build_script, map_answer
from vkscraper.vk.planner import ANSWER_LIMIT, Planner

PARAMS = PageParams(posts_per_group=10, page_size=100, thread_items=10)


def test_the_script_holds_only_integers_and_our_template():
    units = [WallUnit(7), CommentsUnit(7, 3, comment_id=9, anchor=12, seen=11, hint=500)]
    code = build_script(units, PARAMS, 4)
    assert code.startswith("var W=[-7];var C=[[-7,3,9,12,11,-1]];var B=4;")
    with pytest.raises(ValueError):
        build_script(units, PARAMS, 26)
    with pytest.raises((TypeError, ValueError)):  # ids are integers, never text
        build_script([WallUnit("1];API.x.y({});//")], PARAMS)  # type: ignore[arg-type]


def run_script(units, pages_per_cursor, budget=25, fail=()):
    """Run the script in the emulator's engine with a fake wall.getComments: cursor k's
    level has ``pages_per_cursor[k]`` full pages then a short one; calls listed in ``fail``
    (call numbers from 0) fail with error 10."""
    made = []

    def call(method, params):
        made.append((method, dict(params)))
        if len(made) - 1 in fail:
            raise type("ApiError", (Exception,), {"code": 10, "message": "Internal"})()
        if method == "wall.get":
            return {"count": 0, "items": []}
        posts = [c.post_id for c in units if isinstance(c, CommentsUnit)]
        k = posts.index(int(params["post_id"]))
        start = int(params.get("start_comment_id", 0))
        first = start or 1
        total = pages_per_cursor[k] * 99 + 51
        ids = [i for i in range(first, first + 100) if i <= total]
        return {"count": total, "current_level_count": total,
                "items": [{"id": i} for i in ids]}  # fmt: skip

    result = vkscript.run(build_script(units, PARAMS, budget), {}, call)
    return result, made


def test_cursors_get_one_page_each_first_then_the_rest_walks_them_in_order():
    units = [WallUnit(1), CommentsUnit(1, 10), CommentsUnit(1, 11), CommentsUnit(1, 12)]
    result, made = run_script(units, [30, 1, 0], budget=8)
    posts = [int(p["post_id"]) for m, p in made if m == "wall.getComments"]
    # wall.get; first pages of 10, 11, 12; then 10 is walked with what is left (4 calls)
    assert [m for m, _ in made][0] == "wall.get"
    assert posts == [10, 11, 12, 10, 10, 10, 10]
    anchors = [p.get("start_comment_id") for m, p in made if p.get("post_id") == "10"]
    assert anchors == [None, "100", "199", "298", "397"]  # each page starts at the last read
    answer = result.response
    assert [len(p) for p in answer["c"]] == [5, 1, 1]
    mapped = map_answer(units, answer, result.errors)
    assert [len(r.answers) for r in mapped] == [1, 5, 1, 1]


def test_a_short_page_or_a_complete_level_ends_a_cursor_inside_the_script():
    units = [CommentsUnit(1, 10), CommentsUnit(1, 11)]
    _, made = run_script(units, [2, 0])
    posts = [int(p["post_id"]) for _, p in made]
    assert posts == [10, 11, 10, 10]  # 10: 2 full pages and a short one; 11: one short page


def test_a_failed_call_is_false_and_its_error_goes_to_its_unit_in_call_order():
    units = [WallUnit(1), WallUnit(2), CommentsUnit(1, 10), CommentsUnit(1, 11)]
    # calls: 0 wall 1, 1 wall 2 (fails), 2 post 10, 3 post 11 (fails), 4 post 10 …
    result, _ = run_script(units, [3, 3], budget=6, fail={1, 3})
    assert result.response["e"] == [-2, 1]
    mapped = map_answer(units, result.response, result.errors)
    assert not isinstance(mapped[0].answers[0], Exception)
    assert isinstance(mapped[1].answers[0], VkApiTransientError)
    assert len(mapped[2].answers) == 3
    assert not any(isinstance(a, Exception) for a in mapped[2].answers)
    assert len(mapped[3].answers) == 1 and isinstance(mapped[3].answers[0], VkApiTransientError)


def test_errors_map_by_order_and_a_mismatch_is_malformed():
    units = [WallUnit(1), CommentsUnit(1, 10), CommentsUnit(1, 11)]
    data = {"w": [False], "c": [[{"items": []}, False], []], "e": [-1, 0]}
    errors = [
        {"method": "wall.get", "error_code": 15, "error_msg": "wall is disabled"},
        {"method": "wall.getComments", "error_code": 10, "error_msg": "Internal"},
    ]
    wall, post10, post11 = map_answer(units, data, errors)
    assert isinstance(wall.answers[0], VkTargetError) and wall.answers[0].code == 15
    assert isinstance(post10.answers[1], VkApiTransientError)
    assert post11.answers == []  # not reached: sent again later
    with pytest.raises(VkMalformedResponse):
        map_answer(units, data, errors[:1])
    with pytest.raises(VkMalformedResponse):
        map_answer(units, {"w": [], "c": []}, [])


def test_the_planner_sends_full_batches_and_a_partial_one_only_when_asked():
    planner = Planner(page_size=100)
    for post in range(30):
        planner.add(CommentsUnit(1, post, hint=50))  # 1 call each
    full = planner.take(0, partial=False)
    assert [len(b) for b in full] == [25]
    assert planner.take(0, partial=False) == []
    assert [len(b) for b in planner.take(0, partial=True)] == [5]
    big = [CommentsUnit(1, 1, hint=3000), CommentsUnit(1, 2, hint=50)]
    for unit in big:
        planner.add(unit)
    assert planner.take(0, partial=False) == [[big[0]]]  # 30 pages: a batch of its own


def test_the_planner_waits_for_backoff_and_learns_a_safe_size():
    planner = Planner(page_size=100)
    planner.add(WallUnit(1), due=10.0)
    planner.add(CommentsUnit(1, 2, hint=250))
    assert planner.pending() == (1 + 3, 1)  # (calls, of which wall.get), backing off or not
    assert planner.take(5.0, partial=True) == [[CommentsUnit(1, 2, hint=250)]]
    assert planner.take(5.0, partial=True) == [] and planner.next_due() == 10.0
    assert planner.take(10.0, partial=True) == [[WallUnit(1)]]
    planner.too_big(25)
    assert planner.max_calls == 12
    planner.answered(ANSWER_LIMIT // 4, 2)  # 640 kB a call: 6 calls stay under 80 % of 5 MB
    assert planner.max_calls == 6
    planner.too_big(1)
    assert planner.max_calls == 1
