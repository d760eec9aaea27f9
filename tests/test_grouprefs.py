"""Group references: every accepted spelling and clear errors for the rest."""

from __future__ import annotations

import pytest

from vkscraper.vk.grouprefs import GroupRef, GroupRefError, parse_group_ref, parse_group_refs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("123", GroupRef(group_id=123)),
        ("-123", GroupRef(group_id=123)),
        (123, GroupRef(group_id=123)),
        (-123, GroupRef(group_id=123)),
        (" club123 ", GroupRef(group_id=123)),
        ("CLUB5", GroupRef(group_id=5)),
        ("public123", GroupRef(group_id=123)),
        ("event123", GroupRef(group_id=123)),
        ("apiclub", GroupRef(screen_name="apiclub")),
        ("Durov.Team", GroupRef(screen_name="durov.team")),
        ("some_group_2", GroupRef(screen_name="some_group_2")),
        ("https://vk.com/apiclub", GroupRef(screen_name="apiclub")),
        ("http://vk.com/apiclub/", GroupRef(screen_name="apiclub")),
        ("vk.com/apiclub", GroupRef(screen_name="apiclub")),
        ("vk.ru/club42", GroupRef(group_id=42)),
        ("https://m.vk.com/public7?from=feed", GroupRef(group_id=7)),
        ("www.vk.ru/apiclub#wall", GroupRef(screen_name="apiclub")),
        ("https://VK.COM/event9/", GroupRef(group_id=9)),
    ],
)
def test_good_refs(raw, expected):
    assert parse_group_ref(raw) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0", "positive"),
        ("club0", "positive"),
        ("id1", "user page"),
        ("https://vk.com/id1", "user page"),
        ("https://example.com/apiclub", "not a vk.com"),
        ("ftp://host/x", "not a vk.com"),
        ("vk.com/", "one community"),
        ("vk.com/wall-1_2/extra", "one community"),
        ("two words", "has a space inside"),
        ("vk.com/ apiclub", "has a space inside"),
        ("группа", "not a VK community"),
        ("a", "not a VK community"),
        ("x" * 40, "not a VK community"),
        ("bad\x00name", "not a VK community"),
        ("😀", "not a VK community"),
    ],
)
def test_bad_refs_name_the_input(raw, fragment):
    with pytest.raises(GroupRefError) as info:
        parse_group_ref(raw)
    assert fragment in str(info.value)
    if raw.strip():
        assert repr(raw) in str(info.value) or raw in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_list_splits_and_deduplicates():
    refs = parse_group_refs("apiclub, club1,https://vk.com/somegroup, 42,-42 ,,apiclub")
    assert refs == [
        GroupRef(screen_name="apiclub"),
        GroupRef(group_id=1),
        GroupRef(screen_name="somegroup"),
        GroupRef(group_id=42),
    ]
    assert parse_group_refs(["1", "club2"]) == [GroupRef(group_id=1), GroupRef(group_id=2)]
    assert [str(r) for r in refs] == ["apiclub", "1", "somegroup", "42"]


@pytest.mark.parametrize(
    ("raw", "entry"),
    [
        ("foo bar", "'foo bar'"),
        ("group24983,bad ref!", "'bad ref!'"),
        ("1, 2 3 ,4", "'2 3'"),
        ("apiclub,\tclub1\n,x\ty", "'x\\ty'"),
        (["1", "club 2"], "'club 2'"),
    ],
)
def test_whitespace_inside_an_entry_refuses_the_list_naming_the_whole_entry(raw, entry):
    """Lists are comma-separated: whitespace around an entry is trimmed, inside one it is an
    error naming the entry as given (not a guess at two references, nor only its last word)."""
    with pytest.raises(GroupRefError) as info:
        parse_group_refs(raw)
    assert str(info.value) == f"{entry} has a space inside: separate references with commas"


def test_whitespace_around_entries_is_trimmed():
    assert parse_group_refs(" 1 ,\tclub2\n, apiclub ") == [
        GroupRef(group_id=1),
        GroupRef(group_id=2),
        GroupRef(screen_name="apiclub"),
    ]
