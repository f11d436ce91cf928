"""The one SSRF-safe way out: every verification, delivery and WebhookTest request leaves through here.

A Webhook URL is user input and hookline runs inside a cluster, so every outbound request is held to the
same rules (each module says why its rules exist):
- egress.py: which addresses may be reached (`EgressPolicy`): loopback, private, link-local, multicast,
  reserved and cloud-metadata addresses are refused unless allow-listed; https only unless allowed;
  IP-literal URLs are checked before the request is made.
- resolver.py: the host is resolved once per connection and EVERY address checked (`PolicyResolver`);
  the connection goes to exactly those addresses, so DNS rebinding cannot slip in.
- client.py: `SafeHTTPClient`: no redirects for POST, same-origin ones only for GET, one total deadline,
  a capped body read.
- http1.py: the lean HTTP/1.1 keep-alive pool that carries POSTs (deliveries) under the same rules.
- errors.py: `SafeHTTPError` and its kinds, with the short reasons they carry (pure; the delivery policy
  classifies with them without loading the client).
- ownership.py: the URL ownership check (a file the customer publishes), fetched through the client.
"""
