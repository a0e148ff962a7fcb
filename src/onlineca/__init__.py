"""onlineca: device certificates enrolled and renewed through CAPF, an EST RA and a /certsrv CA."""

__version__ = "0.1.0"
