"""Background activities of the operator (daemons apart from handlers): health, resumes, expiry, pool sync."""
