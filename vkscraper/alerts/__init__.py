"""Webhook alerts: when a task ends failed (or completed) or a schedule keeps being skipped,
a JSON document goes to the operator's webhooks from an outbox in the database
(docs/topics/alerts.md)."""
