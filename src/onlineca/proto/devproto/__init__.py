"""The phone <-> CAPF device protocol (see docs/device-protocol.md), sans-I/O.

``codec`` frames bytes into ``Frame``s of TLV ``Element``s (and back) under ``Limits``;
``messages`` turns frames into one typed dataclass per command and holds every number of the
protocol; ``session`` is the explicit state machine of one session, for the CAPF side
(``CAPFSession``) and the phone side (``PhoneSession``): bytes in, typed messages out, bytes to
send.  Nothing in this package opens a socket, reads a clock, sleeps or logs; the CAPF server and
the phone simulator are thin adapters around it.
"""

from onlineca.proto.devproto.codec import Element, Frame, FrameDecoder, Limits, decode_frame, encode_frame
from onlineca.proto.devproto.messages import *  # noqa: F403  (the protocol's names are the API)
from onlineca.proto.devproto.messages import __all__ as _message_names
from onlineca.proto.devproto.session import CAPFSession, PhoneSession, Role, State

__all__ = ["CAPFSession", "Element", "Frame", "FrameDecoder", "Limits", "PhoneSession", "Role", "State",
           "decode_frame", "encode_frame", *_message_names]
