"""GroupTracker on its own: when a group is settled, and which posts count as complete."""

from __future__ import annotations

from vkscraper.extensions._tracking import GroupTracker


def test_a_failed_comment_request_keeps_its_post_out_of_the_complete_ones():
    t = GroupTracker()
    t.add_post(1, 10)
    t.add_post(1, 11)
    ok = t.add_request(1, post=10)
    bad = t.add_request(1, post=11)
    assert t.request_done(ok) == 1
    assert t.request_failed(bad) == 1
    assert t.failed(1)
    assert t.settled(1)
    # Only post 10 was read whole: the comments of 11 must not be marked vanished.
    assert t.complete_posts(1) == [10]


def test_a_request_the_scheduler_dropped_fails_its_post():
    t = GroupTracker()
    t.add_post(2, 20)
    serial = t.add_request(2, post=20)
    assert t.dropped(serial) == 2
    assert t.failed(2) and t.complete_posts(2) == []
    assert t.causes(2) == ["1 request(s) dropped by the scheduler"]


def test_a_group_with_items_in_the_pipelines_is_not_settled():
    t = GroupTracker()
    serial = t.add_request(3)
    t.add_item(3)
    t.request_done(serial)
    assert not t.settled(3)
    t.item_done(3)
    assert t.settled(3)
    t.finish(3)
    assert not t.settled(3) and t.open_groups() == []
