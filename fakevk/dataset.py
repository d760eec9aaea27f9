"""The fake VK world: dataset format, JSON load/save, a deterministic generator and the oracle.

A dataset is a plain JSON-able dict, so tests can build one by hand, save it for the emulator
subprocess and compute the expected crawl result from the very same object::

    {"profiles": [{"id": 1, "first_name": "Анна", "last_name": "K", "screen_name": "anna"}],
     "groups": [
       {"id": 1, "screen_name": "apiclub", "name": "API Club", "type": "group",
        "is_closed": 0, "wall": 1, "deactivated": null, "members_count": 10,
        "author_only": false,
        "posts": [
          {"id": 5, "date": 1700000000, "text": "...", "likes": 3, "reposts": 0, "views": 10,
           "from_id": -1, "signer_id": 1, "edited": 1700000600,
           "is_pinned": false, "comments_closed": false,
           "comments": [
             {"id": 6, "from_id": 1, "date": 1700000100, "text": "...", "likes": 0,
              "deleted": false,
              "replies": [{"id": 7, "from_id": -2, "date": 1700000200, "text": "...",
                           "likes": 1, "deleted": false,
                           "reply_to_comment": 6, "reply_to_user": 1}]}]}]}]}

Semantics shared by the server and :func:`expected_rows`:

* Posts and comments of one wall share one id counter; ids are unique per wall only, and
  different walls deliberately reuse the same numbers.
* ``author_only`` groups have no wall worth crawling; they exist as comment authors and
  ``groups.getById`` / ``utils.resolveScreenName`` targets.
* A wall is readable when the group is not ``author_only``, not ``deactivated``,
  ``is_closed == 0`` and ``wall != 0``.
* Visible comments: every non-deleted top-level comment, every deleted top-level comment that
  still has at least one visible reply (served as a stub), and every non-deleted reply. A
  post's comment count is the number of visible comments, stubs included.
* A post's ``from_id`` is its author: the community (``-id``, the default) or a user who
  posted on an open wall; ``signer_id`` (a user) signs a community post; ``edited`` is the
  unixtime of the last edit; ``views`` None means VK does not count views for the post (the
  field is then absent from ``wall.get``); ``signer_id`` and ``edited`` None are absent too.
* A reply's ``reply_to_comment`` is the comment it answers (the top-level comment or an earlier
  reply of the same thread) and ``reply_to_user`` that comment's author; a stub has neither.

Missing optional keys take the defaults of :data:`GROUP_DEFAULTS`, :data:`POST_DEFAULTS` and
:data:`COMMENT_DEFAULTS`.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Dataset = dict[str, Any]

GROUP_DEFAULTS: dict[str, Any] = {
    "type": "group",
    "is_closed": 0,
    "wall": 1,
    "deactivated": None,
    "members_count": 0,
    "author_only": False,
    "posts": [],
}
POST_DEFAULTS: dict[str, Any] = {
    "text": "",
    "likes": 0,
    "reposts": 0,
    "views": 0,
    "signer_id": None,
    "edited": None,
    "is_pinned": False,
    "comments_closed": False,
    "comments": [],
}
COMMENT_DEFAULTS: dict[str, Any] = {
    "text": "",
    "likes": 0,
    "deleted": False,
    "reply_to_user": None,
    "reply_to_comment": None,
    "replies": [],
}


def normalize_dataset(data: Dataset) -> Dataset:
    """Fill defaults in place and check the invariants the emulator relies on.

    Raises ``ValueError`` naming the first problem: duplicate group ids, an id used twice on
    one wall, or more than one pinned post on a wall.
    """
    data.setdefault("profiles", [])
    data.setdefault("groups", [])
    seen_groups: set[int] = set()
    for group in data["groups"]:
        for key, value in GROUP_DEFAULTS.items():
            group.setdefault(key, [] if key == "posts" else value)
        group.setdefault("screen_name", f"club{group['id']}")
        group.setdefault("name", group["screen_name"])
        gid = int(group["id"])
        if gid <= 0 or gid in seen_groups:
            raise ValueError(f"group id {gid} is not positive or not unique")
        seen_groups.add(gid)
        wall_ids: set[int] = set()
        pinned = 0

        def claim(item_id: int, gid: int = gid, wall_ids: set[int] = wall_ids) -> None:
            if item_id in wall_ids:
                raise ValueError(f"id {item_id} is used twice on the wall of group {gid}")
            wall_ids.add(item_id)

        for post in group["posts"]:
            for key, value in POST_DEFAULTS.items():
                post.setdefault(key, [] if key == "comments" else value)
            post.setdefault("from_id", -gid)  # posted by the community itself
            claim(post["id"])
            pinned += bool(post["is_pinned"])
            for comment in post["comments"]:
                for key, value in COMMENT_DEFAULTS.items():
                    comment.setdefault(key, [] if key == "replies" else value)
                claim(comment["id"])
                for reply in comment["replies"]:
                    for key, value in COMMENT_DEFAULTS.items():
                        if key != "replies":
                            reply.setdefault(key, value)
                    claim(reply["id"])
        if pinned > 1:
            raise ValueError(f"group {gid} has {pinned} pinned posts; VK allows one")
    return data


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset JSON file and fill its defaults."""
    with open(path, encoding="utf-8") as fh:
        return normalize_dataset(json.load(fh))


def save_dataset(data: Dataset, path: str | Path) -> None:
    """Write a dataset as UTF-8 JSON (NUL bytes survive as ``\\u0000`` escapes)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Generator

_FIRST_NAMES = ["Анна", "Иван", "Мария", "Пётр", "Ольга", "John", "Zoë", "Алексей", "Юлия", "Ли"]
_LAST_NAMES = ["Иванова", "Smith", "Петров", "Кузнецова", "O'Brien", "Сидоров", "Ng", "Ёлкин"]
_SENTENCES = [
    "Привет всем!",
    "Отличный пост, спасибо.",
    "Согласен с автором",
    "А когда следующая встреча?",
    "Ёлки-палки, вот это да",
    "Nice one",
    "+1",
    "Не согласна: API возвращает count вместе с ответами.",
    "Смотрите [id1|Анна], тут про пагинацию",
    "Подробнее в [club1|API Club]",
    "Спасибо 🙏",
    "У меня тоже так 👍🏽",
]
_EMOJI = ["🙂", "🔥", "👍🏽", "🎉", "🇷🇺", "❤️", "😂", "🤔"]
_LONG = (
    "Это длинный комментарий, чтобы проверить обрезку по preview_length: VK по умолчанию "
    "отдаёт только первые 90 символов, а остальное теряется, если клиент забыл передать 0. "
)


def _text(rng: random.Random, *, long_chance: float = 0.15) -> str:
    roll = rng.random()
    if roll < 0.05:
        return ""  # sticker- or photo-only comments have no text
    if roll < 0.05 + long_chance:
        return _LONG + rng.choice(_SENTENCES) + rng.choice(_EMOJI)
    parts = [rng.choice(_SENTENCES) for _ in range(rng.randint(1, 3))]
    sep = "\n" if rng.random() < 0.2 else " "
    text = sep.join(parts)
    if rng.random() < 0.3:
        text += " " + "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 3)))
    return text


def _post_comments(
    rng: random.Random,
    next_id: Any,
    post_date: int,
    authors: list[int],
    reply_counts: list[int],
) -> list[dict[str, Any]]:
    """Build a comment tree whose ids and dates follow one realistic timeline.

    Replies arrive after their parent but interleaved with later top-level comments, so ids
    stay chronological (asc by id == asc by date) without being contiguous per thread.
    """
    events: list[tuple[float, int, int]] = []  # (time key, top index, -1 for the top itself)
    n_top = len(reply_counts)
    for i, n_rep in enumerate(reply_counts):
        events.append((float(i), i, -1))
        for r in range(n_rep):
            events.append((i + rng.uniform(0.01, n_top - i + 2), i, r))
    events.sort()
    tops: list[dict[str, Any]] = [{} for _ in range(n_top)]
    date = post_date
    for _key, i, r in events:
        date += rng.randint(20, 1800)
        item: dict[str, Any] = {
            "id": next_id(),
            "from_id": rng.choice(authors),
            "date": date,
            "text": _text(rng),
            "likes": rng.choice([0, 0, 0, 1, 2, 5, 17]),
            "deleted": rng.random() < 0.03,
        }
        if r < 0:
            item["replies"] = []
            tops[i] = item
            continue
        parent = tops[i]
        earlier = parent["replies"]
        roll = rng.random()
        if roll < 0.7:  # answers the top-level comment
            item["reply_to_comment"] = parent["id"]
            item["reply_to_user"] = parent["from_id"]
        elif roll < 0.9 and earlier:  # answers an earlier reply in the same branch
            target = rng.choice(earlier)
            item["reply_to_comment"] = target["id"]
            item["reply_to_user"] = target["from_id"]
        parent["replies"].append(item)
    return tops


def _reply_counts(rng: random.Random, n_top: int, max_replies: int) -> list[int]:
    counts = []
    for _ in range(n_top):
        roll = rng.random()
        if roll < 0.6 or max_replies <= 0:
            counts.append(0)
        elif roll < 0.9:
            counts.append(rng.randint(1, min(5, max_replies)))
        else:
            counts.append(rng.randint(min(6, max_replies), max_replies))
    return counts


def generate_dataset(
    seed: int = 1,
    groups: int = 3,
    posts_per_group: int = 12,
    min_comments: int = 0,
    max_comments: int = 40,
    max_replies: int = 25,
    big_post: bool = False,
    *,
    profiles: int = 25,
    author_groups: int = 2,
    closed_groups: int = 0,
    nul: bool = True,
    closed_comments: bool = True,
    start_date: int = 1_700_000_000,
) -> Dataset:
    """Generate a deterministic dataset (same arguments, same dict).

    Knobs:

    * ``groups`` readable communities with ``posts_per_group`` posts each; every wall's id
      counter starts at 1, so post and comment ids repeat across groups.
    * ``min_comments``/``max_comments``: top-level comments per post (random in the range);
      ``max_replies``: the longest random branch.
    * ``big_post``: one post of the first group gets 130 top-level comments (more than a page).
    * ``profiles``: users who comment; ``author_groups``: ``author_only`` communities that only
      comment (their walls are empty); ``closed_groups``: extra unreadable communities
      (cycling wall disabled, members-only, deactivated), each with a few posts, listed after
      the others and drawn apart: the other groups are the same with or without them.
    * ``nul``: put a NUL byte into one visible comment of the first group.
    * ``closed_comments``: False leaves every post's comments open (a complete crawl of the
      dataset then ends "completed").

    Guaranteed variety (needs ``groups >= 1`` and ``posts_per_group >= 4``): the first group's
    oldest post is pinned; its newest post has a branch of 13 replies (one of them deleted, one
    answering an earlier reply), a deleted top-level stub with replies and a deleted top-level
    comment without replies, and is signed and edited; its second-newest post is by a user
    (``from_id`` > 0); its fourth-newest has no view count; each group has a post with no
    comments; the last group's second-newest post has comments closed (unless
    ``closed_comments`` is False); community authors,
    emoji, Cyrillic, newlines and texts longer than 90 characters appear. Other posts are
    signed or edited at random.
    """
    rng = random.Random(seed)
    # A second stream for the fields added later (signer, edit time), so that adding them did
    # not change what every seed generated before.
    extra = random.Random(f"fakevk-extra-{seed}")
    data: Dataset = {"profiles": [], "groups": []}
    for pid in range(1, profiles + 1):
        profile: dict[str, Any] = {
            "id": pid,
            "first_name": rng.choice(_FIRST_NAMES),
            "last_name": rng.choice(_LAST_NAMES),
        }
        if pid % 3 == 1:
            profile["screen_name"] = f"user{pid}"
        data["profiles"].append(profile)

    main = sorted(rng.sample(range(100, 100_000), groups + author_groups))
    readable_ids, author_ids = main[:groups], main[groups:]
    # Closed communities come from a stream of their own and after the others, so adding
    # some (`make demo-errors`, --closed-groups) leaves every other group as it was: one id
    # is one community whichever of these datasets a user met it in.
    spare = random.Random(f"fakevk-closed-{seed}")
    closed_ids: list[int] = []
    while len(closed_ids) < closed_groups:
        gid = spare.randrange(100, 100_000)
        if gid not in main and gid not in closed_ids:
            closed_ids.append(gid)
    gids = main + closed_ids
    types = ["group", "page", "event"]
    authors = list(range(1, profiles + 1)) * 5 + [-g for g in gids[: groups + author_groups]]

    for index, gid in enumerate(gids):
        group: dict[str, Any] = {
            "id": gid,
            "screen_name": f"group{gid}",
            "name": f"Сообщество {gid} {_EMOJI[index % len(_EMOJI)]}",
            "type": types[index % 3],
            "is_closed": 0,
            "wall": 1,
            "deactivated": None,
            "members_count": rng.randint(10, 50_000),
            "author_only": gid in author_ids,
            "posts": [],
        }
        if gid in closed_ids:
            kind = closed_ids.index(gid) % 3
            if kind == 0:
                group["wall"] = 0
            elif kind == 1:
                group["is_closed"] = 1
            else:
                group["deactivated"] = "banned"
        data["groups"].append(group)
        if gid in author_ids:
            continue

        counter = iter(range(1, 10**9))
        next_id = counter.__next__
        first = index == 0
        n_posts = posts_per_group if gid in readable_ids else 3
        date = start_date + rng.randint(0, 86_400)
        for p in range(n_posts):
            date += rng.randint(2 * 3600, 30 * 3600)
            from_newest = n_posts - 1 - p  # 0 = newest post
            post: dict[str, Any] = {
                "id": next_id(),
                "date": date,
                "text": _text(rng, long_chance=0.3) or "Пост без текста? Нет, с текстом.",
                "likes": rng.randint(0, 500),
                "reposts": rng.randint(0, 30),
                "views": rng.randint(100, 90_000),
                "is_pinned": first and p == 0 and n_posts > 1,
                "comments_closed": False,
            }
            n_top = rng.randint(min_comments, max_comments)
            counts = _reply_counts(rng, n_top, max_replies)
            if from_newest == 2:
                counts = []  # a post nobody commented on
            if first and from_newest == 0:
                counts = [13, 3, 0] + counts
            if first and big_post and from_newest == 3:
                counts = [rng.choice([0, 0, 0, 1, 2]) for _ in range(130)]
            post["comments"] = _post_comments(rng, next_id, date, authors, counts)
            if profiles and extra.random() < 0.25:
                post["signer_id"] = extra.randint(1, profiles)
            if extra.random() < 0.3:
                post["edited"] = date + extra.randint(60, 3 * 86_400)
            if first and from_newest == 0:
                _force_variety(post["comments"], gid, nul)
                post["signer_id"] = 1 if profiles else None
                post["edited"] = date + 600
            if first and from_newest == 1 and profiles:
                post["from_id"], post["signer_id"] = extra.randint(1, profiles), None
            if first and from_newest == 3:
                post["views"] = None  # VK counts no views for this one
            if closed_comments and gid == readable_ids[-1] and from_newest == 1:
                post["comments_closed"] = True
            group["posts"].append(post)
    return normalize_dataset(data)


def heavy_dataset(seed: int = 7, groups: int = 3, *, scale: float = 1.0) -> Dataset:
    """The execute benchmark's shape: ``groups`` walls of 10 posts, about 10,000 comments and
    replies each at ``scale`` 1 (so ~30,000 for 3 groups). Per wall, one post has 2,400
    top-level comments, one has 1,200 and 12 threads of 100 to 400 replies; the other eight
    have up to 150 top-level comments with branches of up to 10 replies (from
    :func:`generate_dataset`).
    """
    data = generate_dataset(
        seed=seed, groups=groups, posts_per_group=10, max_comments=int(150 * scale),
        max_replies=10, author_groups=0, nul=False,
    )  # fmt: skip
    rng = random.Random(f"fakevk-heavy-{seed}")
    authors = [p["id"] for p in data["profiles"]]
    for group in data["groups"]:
        posts = group["posts"]
        if len(posts) < 2:
            continue
        used = [p["id"] for p in posts] + [
            c["id"] for p in posts for t in p["comments"] for c in [t, *t["replies"]]
        ]
        next_id = iter(range(max(used) + 1, 10**9)).__next__
        plans = (
            [rng.choice([0, 0, 0, 0, 1, 2, 3]) for _ in range(int(2400 * scale))],
            [rng.randint(100, 400) if i % 100 == 7 else rng.choice([0, 0, 1])
             for i in range(int(1200 * scale))],
        )  # fmt: skip
        for post, counts in zip(posts[-3:-1], plans, strict=True):
            post["comments_closed"] = False
            post["comments"] = _post_comments(rng, next_id, post["date"], authors, counts)
    return normalize_dataset(data)


def _force_variety(comments: list[dict[str, Any]], gid: int, nul: bool) -> None:
    """Make the generator's promises true whatever the random draws were."""
    thread, stub, lonely = comments[0], comments[1], comments[2]
    thread["deleted"] = False
    thread["text"] = _LONG + "Ветка длиннее десяти ответов 🔥"
    for n, reply in enumerate(thread["replies"]):
        reply["deleted"] = n == 4
    thread["replies"][1]["from_id"] = -gid  # the community answers as itself
    thread["replies"][2]["text"] = "строка 1\nстрока 2 🎉"
    replies = thread["replies"]
    replies[3]["reply_to_comment"] = replies[2]["id"]  # an answer to an earlier reply
    stub["deleted"] = True
    for reply in stub["replies"]:
        reply["deleted"] = False
    lonely["deleted"] = True
    if nul:
        thread["replies"][0]["deleted"] = False
        thread["replies"][0]["text"] = "до\x00после"
    # Authors changed above: every reply_to_user names the author of the comment answered.
    authors = {c["id"]: c["from_id"] for top in comments for c in [top, *top["replies"]]}
    for top in comments:
        for reply in top["replies"]:
            if reply.get("reply_to_comment") is not None:
                reply["reply_to_user"] = authors[reply["reply_to_comment"]]


# --------------------------------------------------------------------------------------------
# Oracle


def wall_readable(group: dict[str, Any]) -> bool:
    """Whether a crawl with a non-member token can read this community's wall."""
    return (
        not group.get("author_only", False)
        and not group.get("deactivated")
        and int(group.get("is_closed", 0)) == 0
        and int(group.get("wall", 1)) != 0
    )


def expected_rows(
    dataset: Dataset,
    posts_per_group: int = 10,
    *,
    nul_replacement: str | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(posts, comments)`` that a complete crawl of ``dataset`` must store.

    Written straight from the raw dict, independently of the server and of any client code,
    so it can serve as the test oracle.

    * posts: the ``posts_per_group`` newest posts by date of every readable group (a pinned
      post counts only if it is among them), as ``{owner_id, vk_post_id, group_id, text,
      likes, comments_count, date, from_id, signer_id, views, reposts, edited}``. Posts with
      closed comments are included (``wall.get`` shows them) but contribute no comments.
      ``views`` is None when the post has none; ``edited`` is an aware UTC datetime or None
      (``date`` stays unix seconds).
    * comments: every visible comment and reply of those posts, as ``{owner_id,
      vk_comment_id, post_vk_id, parent_id, author_id, author_name, text, likes, deleted,
      thread_count, date, reply_to_user, reply_to_comment}``. A stub has
      ``author_id``/``author_name``/``reply_to_*`` None, ``text`` "" and ``likes`` 0.
    * ``nul_replacement``: when not None, NUL characters in texts are replaced by it (mirror
      what the store does with them); None keeps them.
    """
    names: dict[int, str] = {}
    for profile in dataset.get("profiles", []):
        names[int(profile["id"])] = f"{profile['first_name']} {profile['last_name']}"
    for group in dataset.get("groups", []):
        names[-int(group["id"])] = group.get("name") or group.get("screen_name") or ""

    def clean(text: str) -> str:
        return text if nul_replacement is None else text.replace("\x00", nul_replacement)

    posts_out: list[dict[str, Any]] = []
    comments_out: list[dict[str, Any]] = []
    for group in dataset.get("groups", []):
        if not wall_readable(group):
            continue
        gid = int(group["id"])
        owner = -gid
        newest = sorted(group.get("posts", []), key=lambda p: (p["date"], p["id"]), reverse=True)
        for post in newest[:posts_per_group]:
            rows: list[dict[str, Any]] = []
            for top in post.get("comments", []):
                replies = [r for r in top.get("replies", []) if not r.get("deleted")]
                if top.get("deleted") and not replies:
                    continue
                stub = bool(top.get("deleted"))
                rows.append(
                    {
                        "owner_id": owner,
                        "vk_comment_id": top["id"],
                        "post_vk_id": post["id"],
                        "parent_id": None,
                        "author_id": None if stub else top["from_id"],
                        "author_name": None if stub else names.get(top["from_id"]),
                        "text": "" if stub else clean(top.get("text", "")),
                        "likes": 0 if stub else top.get("likes", 0),
                        "deleted": stub,
                        "thread_count": len(replies),
                        "date": int(top["date"]),
                        "reply_to_user": None if stub else top.get("reply_to_user"),
                        "reply_to_comment": None if stub else top.get("reply_to_comment"),
                    }
                )
                for reply in replies:
                    rows.append(
                        {
                            "owner_id": owner,
                            "vk_comment_id": reply["id"],
                            "post_vk_id": post["id"],
                            "parent_id": top["id"],
                            "author_id": reply["from_id"],
                            "author_name": names.get(reply["from_id"]),
                            "text": clean(reply.get("text", "")),
                            "likes": reply.get("likes", 0),
                            "deleted": False,
                            "thread_count": 0,
                            "date": int(reply["date"]),
                            "reply_to_user": reply.get("reply_to_user"),
                            "reply_to_comment": reply.get("reply_to_comment"),
                        }
                    )
            posts_out.append(
                {
                    "owner_id": owner,
                    "vk_post_id": post["id"],
                    "group_id": gid,
                    "text": clean(post.get("text", "")),
                    "likes": post.get("likes", 0),
                    "comments_count": len(rows),
                    "date": int(post["date"]),
                    "from_id": post.get("from_id", owner),
                    "signer_id": post.get("signer_id"),
                    "views": post.get("views", 0),
                    "reposts": post.get("reposts", 0),
                    "edited": None
                    if post.get("edited") is None
                    else datetime.fromtimestamp(int(post["edited"]), UTC),
                }
            )
            if not post.get("comments_closed"):
                comments_out.extend(rows)
    return posts_out, comments_out
