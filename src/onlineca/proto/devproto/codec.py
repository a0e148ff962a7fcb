"""Frames and TLV elements of the phone <-> CAPF device protocol, without any I/O.

A frame is ``protocol_id`` (1 byte, 0x55) . ``command`` (1) . ``session_id`` (4, big-endian) .
``length`` (2, big-endian, of the elements that follow), then elements ``tag`` (1) . ``length`` (2,
big-endian) . ``value``.  ``encode_frame`` turns a ``Frame`` into bytes; ``decode_frame`` parses
exactly one frame; ``FrameDecoder`` takes whatever a socket read returned (any split, even one
byte at a time) and yields each complete frame, enforcing ``Limits`` as soon as a header or an
element header says too much, so a hostile peer can neither make it buffer without bound nor hang.
Every way the input can be wrong ends in ``onlineca.errors.ProtocolError`` with a ``DEVPROTO_*``
code.  This module must never open a socket, sleep, log, or interpret what a command means
(that is ``messages.py``).

Typical use by an adapter::

    decoder = FrameDecoder()
    for frame in decoder.feed(await reader.read(4096)):
        ...
    writer.write(encode_frame(Frame(command, session_id, (Element(tag, value), ...))))
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from onlineca.errors import ProtocolError

PROTOCOL_ID = 0x55
HEADER = struct.Struct(">BBIH")
HEADER_SIZE = HEADER.size  # 8
ELEMENT_HEADER = struct.Struct(">BH")
ELEMENT_HEADER_SIZE = ELEMENT_HEADER.size  # 3
WIRE_MAX_LENGTH = 0xFFFF  # the 2-byte length field's ceiling, for frames and elements alike

# Error codes (ProtocolError.code) of this layer.
E_PROTOCOL_ID = "DEVPROTO_BAD_PROTOCOL_ID"
E_TRUNCATED = "DEVPROTO_TRUNCATED"
E_FRAME_TOO_LONG = "DEVPROTO_FRAME_TOO_LONG"
E_ELEMENT_TOO_LONG = "DEVPROTO_ELEMENT_TOO_LONG"
E_TOO_MANY_ELEMENTS = "DEVPROTO_TOO_MANY_ELEMENTS"
E_ELEMENT_OVERRUN = "DEVPROTO_ELEMENT_OVERRUN"
E_TRAILING = "DEVPROTO_TRAILING_BYTES"
E_ENCODE = "DEVPROTO_ENCODE"
E_DECODER_FAILED = "DEVPROTO_DECODER_FAILED"

PEER_HINT = "The peer does not speak this device protocol correctly; end the session and check its software."


def protocol_error(message: str, code: str, hint: str = PEER_HINT) -> ProtocolError:
    """The one error of the device protocol (codec, messages and session alike)."""
    return ProtocolError(message, code=code, hint=hint)


@dataclass(frozen=True)
class Limits:
    """What a decoder accepts.  Defaults fit the biggest message we send or accept (an RSA 4096
    public key, an LSC of a few kB, a request info to sign) with room to spare."""

    max_frame_length: int = 16 * 1024   # of the elements after the 8-byte header
    max_elements: int = 32
    max_element_length: int = 8 * 1024

    def __post_init__(self) -> None:
        for name in ("max_frame_length", "max_element_length"):
            if not 0 <= getattr(self, name) <= WIRE_MAX_LENGTH:
                raise ValueError(f"{name} must be 0..{WIRE_MAX_LENGTH}")
        if self.max_elements < 0:
            raise ValueError("max_elements must be >= 0")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Element:
    """One TLV element: a tag (0-255) and its value bytes."""

    tag: int
    value: bytes = b""

    def encode(self) -> bytes:
        if not 0 <= self.tag <= 0xFF:
            raise protocol_error(f"element tag {self.tag} does not fit one byte", E_ENCODE)
        if len(self.value) > WIRE_MAX_LENGTH:
            raise protocol_error(f"element {self.tag} value of {len(self.value)} bytes exceeds "
                                 f"{WIRE_MAX_LENGTH}", E_ENCODE)
        return ELEMENT_HEADER.pack(self.tag, len(self.value)) + bytes(self.value)


@dataclass(frozen=True)
class Frame:
    """One protocol data unit: a command byte, the session id and the elements in wire order."""

    command: int
    session_id: int
    elements: tuple[Element, ...] = field(default_factory=tuple)

    def find(self, tag: int) -> list[bytes]:
        """The values of every element with ``tag``, in wire order."""
        return [e.value for e in self.elements if e.tag == tag]


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame`` (raises ProtocolError when a field does not fit the format)."""
    if not 0 <= frame.command <= 0xFF:
        raise protocol_error(f"command {frame.command} does not fit one byte", E_ENCODE)
    if not 0 <= frame.session_id <= 0xFFFFFFFF:
        raise protocol_error(f"session id {frame.session_id} does not fit four bytes", E_ENCODE)
    body = b"".join(e.encode() for e in frame.elements)
    if len(body) > WIRE_MAX_LENGTH:
        raise protocol_error(f"frame body of {len(body)} bytes exceeds {WIRE_MAX_LENGTH}", E_ENCODE)
    return HEADER.pack(PROTOCOL_ID, frame.command, frame.session_id, len(body)) + body


def _parse_header(header: bytes, limits: Limits) -> tuple[int, int, int]:
    protocol_id, command, session_id, length = HEADER.unpack(header)
    if protocol_id != PROTOCOL_ID:
        raise protocol_error(f"protocol id 0x{protocol_id:02x} is not 0x{PROTOCOL_ID:02x}", E_PROTOCOL_ID,
                             "This is not a device-protocol peer (a TLS or HTTP client on the CAPF port?).")
    if length > limits.max_frame_length:
        raise protocol_error(f"frame of {length} bytes exceeds the limit of {limits.max_frame_length}",
                             E_FRAME_TOO_LONG)
    return command, session_id, length


def _parse_elements(body: bytes, limits: Limits) -> tuple[Element, ...]:
    elements: list[Element] = []
    pos = 0
    while pos < len(body):
        if len(elements) >= limits.max_elements:
            raise protocol_error(f"more than {limits.max_elements} elements in one frame", E_TOO_MANY_ELEMENTS)
        if len(body) - pos < ELEMENT_HEADER_SIZE:
            raise protocol_error("element header cut off by the end of the frame", E_ELEMENT_OVERRUN)
        tag, length = ELEMENT_HEADER.unpack_from(body, pos)
        pos += ELEMENT_HEADER_SIZE
        if length > limits.max_element_length:
            raise protocol_error(f"element {tag} of {length} bytes exceeds the limit of "
                                 f"{limits.max_element_length}", E_ELEMENT_TOO_LONG)
        if pos + length > len(body):
            raise protocol_error(f"element {tag} claims {length} bytes but the frame has {len(body) - pos} left",
                                 E_ELEMENT_OVERRUN)
        elements.append(Element(tag, body[pos:pos + length]))
        pos += length
    return tuple(elements)


def decode_frame(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Frame:
    """Exactly one frame from ``data`` (no bytes short, none over)."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise protocol_error(f"{len(data)} bytes are less than a frame header", E_TRUNCATED)
    command, session_id, length = _parse_header(data[:HEADER_SIZE], limits)
    if len(data) < HEADER_SIZE + length:
        raise protocol_error(f"frame announces {length} bytes, {len(data) - HEADER_SIZE} present", E_TRUNCATED)
    if len(data) > HEADER_SIZE + length:
        raise protocol_error(f"{len(data) - HEADER_SIZE - length} bytes after the frame", E_TRAILING)
    return Frame(command, session_id, _parse_elements(data[HEADER_SIZE:], limits))


class FrameDecoder:
    """Incremental decoder: ``feed`` it bytes as they arrive, get back the frames now complete.

    At most one frame's worth of bytes (header + ``max_frame_length``) is ever buffered.  After an
    error the decoder stays failed (the stream has lost its framing), and every later ``feed``
    raises again.
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        return list(self.iter_feed(data))

    def iter_feed(self, data: bytes) -> Iterator[Frame]:
        if self._failed is not None:
            raise protocol_error("the frame decoder failed earlier; the connection must close",
                                 E_DECODER_FAILED)
        self._buffer.extend(data)
        try:
            while len(self._buffer) >= HEADER_SIZE:
                command, session_id, length = _parse_header(bytes(self._buffer[:HEADER_SIZE]), self.limits)
                end = HEADER_SIZE + length
                if len(self._buffer) < end:
                    break
                body = bytes(self._buffer[HEADER_SIZE:end])
                del self._buffer[:end]
                yield Frame(command, session_id, _parse_elements(body, self.limits))
        except ProtocolError as exc:
            self._failed = exc
            self._buffer.clear()
            raise

    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the peer to close)."""
        return not self._buffer


def encode_frames(frames: Iterable[Frame]) -> bytes:
    return b"".join(encode_frame(f) for f in frames)


__all__ = [
    "DEFAULT_LIMITS",
    "ELEMENT_HEADER_SIZE",
    "HEADER_SIZE",
    "PROTOCOL_ID",
    "WIRE_MAX_LENGTH",
    "Element",
    "Frame",
    "FrameDecoder",
    "Limits",
    "decode_frame",
    "encode_frame",
    "encode_frames",
    "protocol_error",
]
