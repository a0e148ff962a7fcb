"""The CA: our own AD CS web-enrollment CA (``/certsrv``), for labs, tests and the demo.

``engine`` issues from templates and keeps requests (ReqID, disposition, certificate) in the
database; ``templates`` is the sans-I/O request policy with AD CS's HRESULTs; ``pages`` holds the
HTML clients parse; ``web`` is the aiohttp app (``create_app``, ``start_ca``); ``users`` the
Basic-auth users file; ``cli`` the ``onlineca ca`` commands.  Nothing here talks to a real AD CS."""
