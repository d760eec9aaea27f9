"""The documents a webhook receives: ours (``generic``) and Slack's incoming-webhook shape
(``{"text": …, "blocks": […]}``), both built from an event's stored snapshot (token-free: it
comes from the task row, and was scrubbed once more when stored) and scrubbed again here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vkscraper.alerts.config import AlertConfig
from vkscraper.store.alerts import Delivery, scrub_value

EVENTS = {
    "failed": "task_failed",
    "completed": "task_completed",
    "stopped": "task_stopped",
    "skipped": "schedule_skipped",
}
SLACK_TEXT_LIMIT = 2900  # Slack refuses a section text over 3000 characters


def summary(kind: str, data: dict[str, Any]) -> str:
    """One line for people."""
    if kind == "skipped":
        name = f" ({data['name']})" if data.get("name") else ""
        return (
            f"vkscraper: schedule {data['schedule_id']}{name} skipped "
            f"{data['skipped_in_a_row']} times in a row: its task {data.get('task_id')} is "
            "still queued or running"
        )
    if kind == "stopped":
        return (
            f"vkscraper: task {data['task_id']} stopped before finishing (run "
            f"{data.get('run', 1)}): {data.get('reason')}; it is resumable once that is fixed "
            f"({data.get('groups_done', 0)}/{data.get('groups_total', 0)} groups done)"
        )
    return (
        f"vkscraper: task {data['task_id']} {kind} (run {data.get('run', 1)}): "
        f"{data.get('groups_done', 0)}/{data.get('groups_total', 0)} groups, "
        f"{data.get('posts', 0)} posts, {data.get('comments', 0)} comments, "
        f"{data.get('errors_total', 0)} errors"
    )


def generic_body(delivery: Delivery, config: AlertConfig) -> dict[str, Any]:
    data = dict(delivery.payload)
    if data.get("task_id") is not None:
        data["url"] = config.task_link(data["task_id"])
    body: dict[str, Any] = {
        "source": "vkscraper",
        "event": EVENTS[delivery.kind],
        "event_id": delivery.event_id,
        "created_at": delivery.created_at.isoformat(),
        "text": summary(delivery.kind, data),
        "schedule" if delivery.kind == "skipped" else "task": data,
    }
    return body


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(delivery: Delivery, config: AlertConfig) -> dict[str, Any]:
    data = delivery.payload
    text = summary(delivery.kind, data)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _escape(text)}}
    ]
    if delivery.kind != "skipped":
        groups = ", ".join(str(g) for g in data.get("groups") or [])
        more = data.get("groups_total", 0) - len(data.get("groups") or [])
        fields = [
            f"*Groups*\n{_escape(groups)}" + (f" and {more} more" if more > 0 else ""),
            f"*Done*\n{data.get('groups_done', 0)}/{data.get('groups_total', 0)}",
            f"*Posts*\n{data.get('posts', 0)}",
            f"*Comments*\n{data.get('comments', 0)}",
        ]
        blocks.append(
            {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}
        )
        if errors := data.get("errors"):
            listed = "\n".join(f"• {_escape(str(e))}" for e in errors)
            if data.get("errors_total", 0) > len(errors):
                listed += f"\n… {data['errors_total'] - len(errors)} more"
            if len(listed) > SLACK_TEXT_LIMIT:
                listed = listed[: SLACK_TEXT_LIMIT - 1] + "…"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listed}})
    link = config.task_link(data["task_id"]) if data.get("task_id") is not None else None
    if link:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{link}|task {data['task_id']}>"}],
            }
        )
    return {"text": text, "blocks": blocks}


def body_for(
    shape: str, delivery: Delivery, config: AlertConfig, tokens: Sequence[str]
) -> dict[str, Any]:
    """The document for a webhook of ``shape``, with every token scrubbed."""
    build = slack_body if shape == "slack" else generic_body
    return scrub_value(build(delivery, config), tokens)
