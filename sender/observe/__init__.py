"""Process plumbing every service shares: metrics families, /healthz, /readyz, /metrics, sites and signals."""
