"""Troubleshooting: preflight checks of every hop (``diagnose``), log collection into one bundle,
log analysis by failure signature, and one device's timeline across all three tiers.

``findings`` holds the report values and codes, ``checks`` the hop checks, ``analyze`` the
signatures, ``collect`` the bundle and ``trace`` the timeline; ``cli`` is the command line.
Nothing here changes the system it looks at, and nothing here writes or prints a secret.
"""
