"""The administration console: a REST API (OpenAPI 3.1) and server-rendered pages over one service
layer (``onlineca.service``) that the command line shares.

``app`` builds the application (FastAPI on Starlette, Jinja2 templates, inline SVG charts, one
stylesheet and one small optional script shipped in the wheel), ``auth`` says who is calling,
``problems`` turns errors into RFC 9457 problem details, ``server`` serves it with uvicorn over
TLS.  It never imports click or rich and never writes a secret to a log or the audit log.
"""
