"""The operating system below the tiers: files, TLS contexts, users files, network errors, serving.

Nothing above ``infra`` opens a file for writing, builds an ``SSLContext`` or classifies a socket
error by itself; nothing in ``infra`` decides policy or knows a tier.
"""
