"""Group list: ids, pending screen names, resolution, removal."""

from __future__ import annotations

from vkscraper.items import VkGroup
from vkscraper.vk.grouprefs import GroupRef, parse_group_refs


def _summary(store):
    return [(g["id"], g["screen_name"], g["is_active"], g["pending"]) for g in store.list_groups()]


def test_add_list_remove(store):
    store.add_groups(parse_group_refs("club5, apiclub, 3, vk.com/Durov, 5"))
    assert _summary(store) == [
        (3, None, True, False),
        (5, None, True, False),
        (None, "apiclub", True, True),
        (None, "durov", True, True),
    ]
    assert store.active_group_refs() == [
        GroupRef(group_id=3),
        GroupRef(group_id=5),
        GroupRef(screen_name="apiclub"),
        GroupRef(screen_name="durov"),
    ]
    assert store.remove_groups(parse_group_refs("5,durov,404")) == 2
    assert _summary(store) == [(3, None, True, False), (None, "apiclub", True, True)]
    store.add_groups(parse_group_refs("3,apiclub"))  # adding again is harmless
    assert len(store.list_groups()) == 2


def test_resolve_moves_pending_into_groups(store):
    store.add_groups(parse_group_refs("apiclub,7"))
    store.save_resolved_groups(
        [VkGroup(id=1, screen_name="apiclub", name="VK API"), VkGroup(id=7, name="Seven")]
    )
    groups = store.list_groups()
    assert [(g["id"], g["screen_name"], g["name"], g["pending"]) for g in groups] == [
        (1, "apiclub", "VK API", False),
        (7, None, "Seven", False),
    ]
    assert store.active_group_refs() == [GroupRef(group_id=1), GroupRef(group_id=7)]
    # Adding the name again reactivates the resolved group instead of a new pending row.
    store.add_groups(parse_group_refs("apiclub"))
    assert len(store.list_groups()) == 2
    # Removing by name removes the resolved group too.
    assert store.remove_groups(parse_group_refs("apiclub")) == 1
    assert [g["id"] for g in store.list_groups()] == [7]


def test_resolve_keeps_is_active_of_existing_rows(store):
    store.add_groups(parse_group_refs("8"))
    store.save_resolved_groups([VkGroup(id=8, screen_name="eight", name="Eight")])
    # Deactivate directly (no public API yet), then resolve again: stays inactive.
    store._run("t", lambda cur: cur.execute("UPDATE groups SET is_active = false WHERE id = 8"))
    store.save_resolved_groups([VkGroup(id=8, screen_name="eight", name="Eight v2")])
    assert _summary(store) == [(8, "eight", False, False)]
    assert store.list_groups()[0]["name"] == "Eight v2"
    assert store.active_group_refs() == []
    store.add_groups(parse_group_refs("8"))  # add reactivates
    assert store.active_group_refs() == [GroupRef(group_id=8)]
