"""Strict CBOR and frames: what hostile bytes give."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.wire import cbor
from bridge.wire.channels import Channel
from bridge.wire.errors import ErrorCode, ProtocolError
from bridge.wire.frame import Frame, decode_frame, encode_frame


@pytest.mark.parametrize(
    ("hex_bytes", "why"),
    [
        ("", "empty"),
        ("c11a514b67b0", "a tag"),
        ("9f01ff", "indefinite array"),
        ("1801", "integer not in shortest form"),
        ("5801ff", "length not in shortest form"),
        ("a2000100 02", "duplicate key"),
        ("a1f600", "null as a map key"),
        ("62c328", "bad UTF-8"),
        ("f7", "undefined"),
        ("f0", "unassigned simple value"),
        ("0101", "trailing bytes"),
        ("8181818181818181818100", "nested too deeply"),
        ("9b00000000ffffffff", "array longer than the input"),
        ("5a7fffffff00", "string longer than the input"),
        ("1c", "reserved argument"),
        ("fb0000", "truncated float"),
    ],
)
def test_cbor_rejects(hex_bytes: str, why: str) -> None:
    with pytest.raises(ProtocolError) as info:
        cbor.loads(bytes.fromhex(hex_bytes.replace(" ", "")))
    assert info.value.code is ErrorCode.MALFORMED, why


def test_cbor_accepts_the_subset() -> None:
    value = {0: [1, -2, b"x", "é", True, False, None, 1.5], "k": {1: 2}}
    assert cbor.loads(cbor.dumps(value)) == value


def test_item_limit() -> None:
    with pytest.raises(ProtocolError):
        cbor.loads(cbor2.dumps([0] * (cbor.MAX_ITEMS + 1)))


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ({0: 1}, ErrorCode.MALFORMED),
        ([1, 1, 0], ErrorCode.MALFORMED),
        ([9, 1, 0, {}], ErrorCode.UNSUPPORTED),
        ([-1, 1, 0, {}], ErrorCode.MALFORMED),
        ([True, 1, 0, {}], ErrorCode.MALFORMED),
        ([1, 256, 0, {}], ErrorCode.MALFORMED),
        ([1, 1, -1, {}], ErrorCode.MALFORMED),
        ([1, 1, 2**32, {}], ErrorCode.MALFORMED),
        ([1, 1, "0", {}], ErrorCode.MALFORMED),
        ([1, 1, 0, []], ErrorCode.MALFORMED),
        ([1, 1, 0, {}, {}], ErrorCode.MALFORMED),
        ([1, 1, 0, {}, {7: 1}], ErrorCode.UNSUPPORTED),
        ([1, 1, 0, {}, {1: "x"}], ErrorCode.MALFORMED),
        ([1, 1, 0, {}, {1: 1}, 0], ErrorCode.MALFORMED),
    ],
)
def test_frame_shape_checks(value: object, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(cbor.dumps(value))
    assert info.value.code is code


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_give_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_frame(data)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(0, 100) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(Channel),
    type_=st.integers(0, 255),
    seq=st.none() | st.integers(0, 2**32 - 1),
    body=st.dictionaries(st.integers(0, 30) | st.text(max_size=5), json_like, max_size=5),
    acks=st.dictionaries(st.sampled_from(Channel), st.integers(0, 2**32 - 1), max_size=3),
)
def test_frames_round_trip(
    channel: Channel,
    type_: int,
    seq: int | None,
    body: dict[int | str, object],
    acks: dict[Channel, int],
) -> None:
    frame = Frame(channel, type_, seq, body, acks)
    assert decode_frame(encode_frame(frame)) == frame


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_frames_give_only_protocol_errors(data: st.DataObject) -> None:
    frame = encode_frame(Frame(Channel.AUDIO, 2, 7, {0: 2, 1: "text", 2: [1, 2, b"x"]}))
    pos = data.draw(st.integers(0, len(frame) - 1))
    byte = data.draw(st.integers(0, 255))
    mutated = frame[:pos] + bytes((byte,)) + frame[pos + 1 :]
    cut = data.draw(st.integers(0, len(mutated)))
    with contextlib.suppress(ProtocolError):
        decode_frame(mutated[:cut])
