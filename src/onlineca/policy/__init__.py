"""Pure decisions: values in, decision out (``ca``: template policy; ``capf``: device policy).

No I/O, no database, no clock of its own: callers pass the time.  Imports nothing here.
"""
