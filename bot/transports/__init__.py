"""Channels the outbox dispatcher sends through: console (here), Slack, Telegram."""
