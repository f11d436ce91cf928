"""Accepting events from producers: the body rules (pure) and the HTTP handler that publishes them."""
