"""What travels: events, request bodies, signatures, the sender config and delivery outcomes.

Pure: imports only hookline.api and each other."""
