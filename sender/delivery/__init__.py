"""Delivering one Webhook: the engine, its supervisor, and the pure policies it follows (settlement, retry, rate limits)."""
