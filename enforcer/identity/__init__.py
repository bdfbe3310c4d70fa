"""Who is calling: API keys, task tokens and client certificates.

Pure building blocks, no gRPC servicer code: the server's interceptor turns a
request's metadata or TLS peer into one of these, and every refusal is an
enforcer.errors.Unauthenticated whose `reason` is a stable label (the metric
and audit value) and whose message never carries the secret presented.

- apikeys: `aecl_<key_id>_<secret>` keys, shown once and stored only as a
  SHA-256 hash in a per-principal hash file.
- tokens: short-lived PASETO v4.public task tokens, signed with the service's
  own Ed25519 key (not the audit key: the two rotate independently).
- certs: development CA and mTLS certificates with SPIFFE URI SANs, and the
  identity read from a verified peer certificate.
"""
