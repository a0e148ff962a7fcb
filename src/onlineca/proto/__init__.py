"""Pure protocol cores: bytes in, typed values out, and back.  No I/O, no clock, no logging.

This package imports nothing: import the module you need (``onlineca.proto.est``,
``onlineca.proto.devproto.session``...), so importing one core never loads another.
"""
