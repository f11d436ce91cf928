"""Data plane: event model, ingest, delivery engine, signing, metrics and the SSRF-safe client."""
