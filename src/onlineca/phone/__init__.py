"""The device simulator: phones that keep their keys, MIC and LSC in a folder and speak the device
protocol to CAPF exactly as a real phone would.

``device`` is one phone (its key material; the private keys never leave the ``Phone`` object),
``client`` runs one session over TLS with the devproto phone-side state machine, ``fleet`` runs
many phones at once and measures them, ``mic`` is a manufacturer CA that gives phones their MICs,
``cli`` is ``onlineca phone ...``.  Nothing here decides policy: the phone does what CAPF asks.
"""

from onlineca.phone.client import PhoneAuth, SessionResult, Target, check_in, phone_ssl_context, run_session
from onlineca.phone.device import KeyPool, Phone, PhoneError

__all__ = ["KeyPool", "Phone", "PhoneAuth", "PhoneError", "SessionResult", "Target", "check_in",
           "phone_ssl_context", "run_session"]
