"""The one SSRF-safe way out: egress address policy, errors, the HTTP/1.1 client, the ownership fetch."""
