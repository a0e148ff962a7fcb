"""The RA: an EST server (RFC 7030) that enrolls at a CA through a ``CABackend``.

``start_ra``/``make_ra_app`` (``app``) run the EST server with start-up checks, health, readiness
and Prometheus metrics; ``connector`` holds the two backends (``certsrv`` for AD CS web
enrollment, ``local`` for in-process signing).  Nothing here logs a credential."""
