"""`hookline list` and `hookline test`: small commands for people, on the current kubeconfig."""
