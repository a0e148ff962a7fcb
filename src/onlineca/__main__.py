"""``python -m onlineca``: the same command as the ``onlineca`` console script."""

from onlineca.cli import main

if __name__ == "__main__":  # a spawned worker (store.auth_hashing) imports this module again: it must not run
    main()
