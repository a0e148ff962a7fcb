"""EST (RFC 7030): the CA-backend contract and the local signer (``backend``), an aiohttp server
(``server``) and client (``client``); the messages are ``proto.est``'s.

Import from the modules (this package re-exports nothing).  Nothing here holds state or does I/O
at import time."""
