"""tools.bench.wire: the pause command's bytes and the handshake's records, read from
the demo's capture with bridge-dump's decoder."""

from __future__ import annotations

from tools.bench.handshake import flights
from tools.bench.wire import measure, measure_radio


def test_the_wire_measurements_read_the_capture() -> None:
    android, legacy = measure("android"), measure("legacy")
    assert android.pause_record == android.pause_frame + 17  # counter byte and tag
    assert android.pause_value == android.pause_record + 3  # a FIRST segment's header
    assert android.pause_packets == 1 and android.pause_value <= 32
    assert legacy.pause_packets == 2 and legacy.pause_value == 20  # MTU 23: 20-byte values
    assert android.known_messages < android.pairing_messages
    # the ATT PDU and L2CAP frame are read from the HCI packets, not added up
    assert android.pause_att_pdu == android.pause_value + 3  # opcode and handle
    assert android.pause_l2cap == android.pause_att_pdu + 4  # length and channel id
    assert legacy.pause_att_pdu == 23  # the whole MTU


def test_the_wire_on_the_bumble_radio() -> None:
    # the head unit's real HCI traffic (Bumble's host): the same bytes as on the simulated link
    radio, simulated = measure_radio(), measure("ios")
    assert radio.pause_packets == 1
    assert (radio.pause_frame, radio.pause_record, radio.pause_value) == (
        simulated.pause_frame, simulated.pause_record, simulated.pause_value,
    )  # fmt: skip
    assert radio.pause_att_pdu == radio.pause_value + 3
    assert radio.pause_l2cap == radio.pause_value + 7
    assert radio.known_messages < radio.pairing_messages


def test_round_trips_to_the_first_application_frame() -> None:
    known = flights(known=True)
    assert (known.first_frame, known.codes) == (2, None)  # Noise KK: one round trip
    # Noise XX carries the commitment (message 2) and the head unit's nonce (message 3);
    # the phone's nonce makes 2 round trips to the code on both screens; then the
    # confirmations: the phone's goes with its nonce, the head unit's answers it, and the
    # phone's first frame follows it
    first = flights(known=False)
    assert (first.first_frame, first.codes) == (6, 4)
