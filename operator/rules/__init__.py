"""The operator's decisions, pure: what should exist, what status says, when to verify, where a
Webhook runs."""
