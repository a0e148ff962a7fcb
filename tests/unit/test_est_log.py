"""The libEST-style line format (``***EST [INFO][function:line]--> message``)."""

from __future__ import annotations

import logging
import re

from onlineca.logs.estlog import ESTLibFormatter


def _record(level: int, msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("onlineca.est", level, __file__, 216, msg, None, None, func="fallback")
    rec.__dict__.update(extra)
    return rec


def test_line_matches_the_source_document_shape():
    line = ESTLibFormatter().format(_record(logging.INFO, "libest 2.2.0 (API level 4)", func="est_log_version"))
    assert line == "***EST [INFO][est_log_version:216]--> libest 2.2.0 (API level 4)"


def test_levels_and_fallback_function_name():
    rec = logging.LogRecord("onlineca.est", logging.WARNING, __file__, 7, "HTTP authentication failed. Auth type=1",
                            None, None, func="est_http_authenticate")
    line = ESTLibFormatter().format(rec)
    assert re.fullmatch(r"\*\*\*EST \[WARNING\]\[est_http_authenticate:7\]--> HTTP authentication failed\. Auth type=1",
                        line)
    assert ESTLibFormatter().format(_record(logging.ERROR, "x")).startswith("***EST [ERROR][fallback:216]")
