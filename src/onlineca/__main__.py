"""``python -m onlineca``: the same command as the ``onlineca`` console script."""

from onlineca.cli import main

main()
