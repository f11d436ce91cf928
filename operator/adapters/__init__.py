"""Thin I/O at the operator's edges: the Kubernetes API calls it makes and its NATS administration."""
