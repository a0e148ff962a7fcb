"""EST (RFC 7030): sans-I/O messages, the signing-backend interface, an aiohttp server and client.

Import from here: ``ESTClient``, ``start_est_server``, ``LocalSigner``, ``ESTCodedError``...
Nothing here holds state or does I/O at import time."""
