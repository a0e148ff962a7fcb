"""Troubleshooting: preflight checks of every hop (``diagnose``), log collection into one bundle,
log analysis by failure signature, and one device's timeline across all three tiers.

``findings`` holds the report values and codes, ``checks`` the hop checks (with ``capf_hop``,
CAPF's own port, and ``observed``, what the tiers saw of real enrollments), ``signatures`` what a
log record means, ``analyze`` the correlation of records into root causes, ``collect`` the bundle
and ``trace`` the timeline; parsing each log format is ``onlineca.logs``'s, and ``cli`` is the
command line.  Nothing here changes the system it looks at, and nothing here writes or prints a
secret.
"""
