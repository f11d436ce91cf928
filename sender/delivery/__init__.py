"""Delivering one Webhook: the engine and its supervisor, and the pure policies they follow
(settlement, retry, rate limits)."""
