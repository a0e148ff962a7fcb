"""The RA's log files: ``error.log`` (NGINX lines and libEST lines interleaved, as in the source
document) and ``access.log`` (NGINX access lines).

``onlineca.ra`` records are written as ``YYYY/MM/DD HH:MM:SS [level] pid#0: function: message``
(``NginxErrorFormatter``), ``onlineca.est`` records as ``***EST [LEVEL][function:line]--> ...``
(``ESTLibFormatter``), both into the same ``error.log``; ``onlineca.ra.access`` goes to
``access.log`` only.  With ``fmt="json"`` every file gets JSON lines instead.  ``attach_ra_logs``
returns a function that detaches exactly what it attached.  Every handler redacts secrets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from onlineca.logs import attach_log
from onlineca.logs.estlog import ESTLibFormatter
from onlineca.logs.nginx import NginxErrorFormatter

ERROR_LOG = "error.log"
ACCESS_LOG = "access.log"
ACCESS_LOGGER = "onlineca.ra.access"


def attach_ra_logs(log_dir: str | Path, fmt: str = "text", level: str = "info") -> Callable[[], None]:
    """Attach the RA's handlers; the returned function removes and closes them."""
    log_dir = Path(log_dir)
    logging.getLogger(ACCESS_LOGGER).propagate = False  # access lines belong in access.log, not error.log
    detachers = [attach_log(name, log_dir / file, fmt, level, formatter)
                 for name, file, formatter in (("onlineca.ra", ERROR_LOG, NginxErrorFormatter()),
                                               ("onlineca.est", ERROR_LOG, ESTLibFormatter()),
                                               (ACCESS_LOGGER, ACCESS_LOG, logging.Formatter("%(message)s")))]

    def detach() -> None:
        for undo in detachers:
            undo()

    return detach


__all__ = ["ACCESS_LOG", "ACCESS_LOGGER", "ERROR_LOG", "attach_ra_logs"]
