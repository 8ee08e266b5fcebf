"""Encryption in transit, access control and protected models (docs/security.md).

- ``tls``: certificates per port, reloaded when their files change (gRPC and aiohttp).
- ``groups``: Triton's API groups and the group of every gRPC method and HTTP route.
- ``auth_config``, ``principals``: the --auth-config file, bearer-token digests, mTLS identities, grants.
- ``restricted``: Triton's --grpc-restricted-protocol / --http-restricted-api.
- ``guard``: the decision for one call; ``audit``: the audit log and the failure counters.
- ``model_encryption``, ``encrypt_cli``: model.onnx.enc (AES-256-GCM) and `ortserve encrypt-model`.
- ``settings``, ``flags``, ``layer``: the flags, and what app.py gets from this package.
"""
