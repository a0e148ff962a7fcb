"""The service layer: what an administrator can do, once, for the command line and the console alike.

``onlineca.cli`` (the ``capf``, ``ca`` and ``admin`` commands) and ``onlineca.admin`` (the REST API
and the pages) call the same functions here, so they cannot disagree: each function takes the
``Services`` of the process (configuration and databases) and the ``Actor`` acting (name, role,
through what and from where), checks the actor's role, does the work through the repositories
of ``onlineca.store`` (and the CA engine, ``diagnose`` and ``logs``), and records every change in
the audit log in the same transaction.  Functions return plain JSON-ready values.

Modules: ``core`` (Services, Actor, roles and permissions), ``audit``, ``accounts`` (users,
passwords, sessions, API tokens, login throttling), ``devices`` (inventory, operations,
profiles, bulk CSV), ``reports`` (the CAPF report and the dashboard's numbers), ``ca`` (the CA's
requests), ``health`` (diagnose, the online-CA connection test, each tier's certificate),
``logs`` (trace, analyze, collect), ``settings`` (the configuration file, redacted and changed).

Nothing here talks to a terminal or to HTTP, and no secret (password, token, auth string) is ever
written to the audit log or a log line.
"""
