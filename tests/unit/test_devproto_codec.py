"""The device-protocol codec: frames by hand, every framing error, the incremental decoder fed
byte by byte and in random chunks, limits, and hypothesis (random and mutated bytes only ever
raise our ProtocolError, never hang, never buffer past the limits)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from onlineca.errors import ProtocolError
from onlineca.proto.devproto import codec
from onlineca.proto.devproto.codec import Element, Frame, FrameDecoder, Limits, decode_frame, encode_frame
from onlineca.proto.devproto.messages import decode_message

VECTORS = Path(__file__).parents[1] / "vectors" / "devproto"


def read_hex(path: Path) -> bytes:
    return bytes.fromhex("".join(line for line in path.read_text().splitlines() if not line.startswith("#")))


ALL_VECTORS = [read_hex(p) for p in sorted(VECTORS.glob("*.hex"))]
STREAM = b"".join(ALL_VECTORS)


def test_frame_by_hand():
    # 0x55, END_SESSION (15), session 0x01020304, 4 bytes of elements: REASON (1) len 1 value 1.
    wire = bytes.fromhex("550f01020304" "0004" "01000101")
    frame = decode_frame(wire)
    assert frame == Frame(15, 0x01020304, (Element(1, b"\x01"),))
    assert encode_frame(frame) == wire
    assert frame.find(1) == [b"\x01"] and frame.find(2) == []


def test_empty_frame_and_empty_element():
    assert decode_frame(bytes.fromhex("551100000001" "0000")) == Frame(17, 1, ())
    assert decode_frame(bytes.fromhex("551100000001" "0003" "100000")).elements == (Element(16, b""),)


@pytest.mark.parametrize("wire,code", [
    ("", codec.E_TRUNCATED),
    ("5501000000", codec.E_TRUNCATED),
    ("5601000000010000", codec.E_PROTOCOL_ID),
    ("160301020304", codec.E_TRUNCATED),             # a TLS ClientHello start is not even a header...
    ("1603010200010001", codec.E_PROTOCOL_ID),       # ...and with 8 bytes it is refused by protocol id
    ("5501000000010004010001", codec.E_TRUNCATED),     # announces 4, carries 3
    ("55010000000100040100010100", codec.E_TRAILING),  # one byte after the frame
    ("5501000000010004010002ff", codec.E_ELEMENT_OVERRUN),
    ("55010000000100020100", codec.E_ELEMENT_OVERRUN),
    ("550100000001ffff", codec.E_FRAME_TOO_LONG),
])
def test_framing_errors(wire, code):
    data = bytes.fromhex(wire)
    with pytest.raises(ProtocolError) as err:
        decode_frame(data)
    assert err.value.code == code
    assert err.value.hint  # every error tells the administrator what to do


def test_element_limits():
    limits = Limits(max_frame_length=100, max_elements=2, max_element_length=10)
    three = encode_frame(Frame(17, 1, (Element(1, b"a"), Element(2, b"b"), Element(3, b"c"))))
    with pytest.raises(ProtocolError) as err:
        decode_frame(three, limits)
    assert err.value.code == codec.E_TOO_MANY_ELEMENTS
    big = encode_frame(Frame(17, 1, (Element(1, b"x" * 11),)))
    with pytest.raises(ProtocolError) as err:
        decode_frame(big, limits)
    assert err.value.code == codec.E_ELEMENT_TOO_LONG
    assert decode_frame(encode_frame(Frame(17, 1, (Element(1, b"x" * 10),))), limits)


def test_limits_are_checked_on_construction():
    with pytest.raises(ValueError):
        Limits(max_frame_length=70000)
    with pytest.raises(ValueError):
        Limits(max_elements=-1)


@pytest.mark.parametrize("frame", [Frame(256, 1), Frame(1, 1 << 32), Frame(1, 1, (Element(300, b""),)),
                                   Frame(1, 1, (Element(1, b"x" * 70000),)),
                                   Frame(1, 1, tuple(Element(1, b"x" * 60000) for _ in range(2)))])
def test_encode_refuses_what_does_not_fit(frame):
    with pytest.raises(ProtocolError) as err:
        encode_frame(frame)
    assert err.value.code == codec.E_ENCODE


def test_decoder_byte_by_byte_yields_every_vector():
    decoder = FrameDecoder()
    frames = []
    for i in range(len(STREAM)):
        frames += decoder.feed(STREAM[i:i + 1])
    assert [encode_frame(f) for f in frames] == ALL_VECTORS
    assert decoder.at_frame_boundary() and decoder.buffered == 0


@pytest.mark.parametrize("seed", range(20))
def test_decoder_random_chunks(seed):
    rnd = random.Random(seed)
    decoder = FrameDecoder()
    frames, pos = [], 0
    while pos < len(STREAM):
        n = rnd.randint(0, 700)
        frames += decoder.feed(STREAM[pos:pos + n])
        pos += n
    assert [encode_frame(f) for f in frames] == ALL_VECTORS


def test_decoder_refuses_an_oversized_frame_on_its_header_alone():
    decoder = FrameDecoder(Limits(max_frame_length=64))
    assert decoder.feed(b"\x55\x01\x00\x00") == []
    with pytest.raises(ProtocolError) as err:
        decoder.feed(b"\x00\x01\x00\x41")  # 65 announced, nothing of the body sent yet
    assert err.value.code == codec.E_FRAME_TOO_LONG
    assert decoder.buffered == 0


def test_decoder_stays_failed():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError) as err:
        decoder.feed(ALL_VECTORS[0])
    assert err.value.code == codec.E_DECODER_FAILED


def test_decoder_keeps_a_partial_frame():
    decoder = FrameDecoder()
    assert decoder.feed(ALL_VECTORS[0] + ALL_VECTORS[1][:5]) and decoder.buffered == 5
    assert not decoder.at_frame_boundary()
    assert len(decoder.feed(ALL_VECTORS[1][5:])) == 1


# ------------------------------------------------------------------ hypothesis

SMALL = Limits(max_frame_length=512, max_elements=8, max_element_length=128)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_everything(data: bytes, chunks: list[int], limits: Limits) -> list[Frame]:
    decoder = FrameDecoder(limits)
    frames, pos = [], 0
    for n in chunks + [len(data)]:
        frames += decoder.feed(data[pos:pos + n])
        pos += n
        assert decoder.buffered <= codec.HEADER_SIZE + limits.max_frame_length
    for frame in frames:
        assert len(frame.elements) <= limits.max_elements
        assert all(len(e.value) <= limits.max_element_length for e in frame.elements)
        try:
            decode_message(frame)
        except ProtocolError:
            pass
    return frames


@FUZZ
@given(st.binary(max_size=2048), st.lists(st.integers(0, 64), max_size=40))
def test_random_bytes_only_raise_protocol_error(data, chunks):
    for limits in (SMALL, codec.DEFAULT_LIMITS):
        try:
            _decode_everything(data, chunks, limits)
        except ProtocolError:
            pass
        try:
            decode_message(decode_frame(data, limits))
        except ProtocolError:
            pass


@FUZZ
@given(st.sampled_from(ALL_VECTORS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                                max_size=6), st.lists(st.integers(0, 64), max_size=20))
def test_mutated_vectors_only_raise_protocol_error(wire, edits, chunks):
    data = bytearray(wire)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        _decode_everything(bytes(data), chunks, codec.DEFAULT_LIMITS)
    except ProtocolError:
        pass


@FUZZ
@given(st.sampled_from(ALL_VECTORS), st.integers(0, 10_000), st.binary(max_size=40))
def test_truncated_and_extended_vectors(wire, cut, tail):
    cut %= len(wire)
    with pytest.raises(ProtocolError):
        decode_frame(wire[:cut])
    if tail:
        with pytest.raises(ProtocolError):
            decode_frame(wire + tail)


frames_strategy = st.builds(
    Frame, st.integers(0, 255), st.integers(0, 0xFFFFFFFF),
    st.lists(st.builds(Element, st.integers(0, 255), st.binary(max_size=100)), max_size=8).map(tuple))


@FUZZ
@given(st.lists(frames_strategy, min_size=1, max_size=5), st.lists(st.integers(1, 50), max_size=30))
def test_any_frames_round_trip_in_any_split(frames, chunks):
    wire = codec.encode_frames(frames)
    assert _decode_everything(wire, chunks, codec.DEFAULT_LIMITS) == frames
