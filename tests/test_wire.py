"""tools.bench.wire: the pause command's bytes and the handshake's records, read from
the demo's capture with bridge-dump's decoder."""

from __future__ import annotations

from tools.bench.handshake import flights
from tools.bench.wire import measure


def test_the_wire_measurements_read_the_capture() -> None:
    android, legacy = measure("android"), measure("legacy")
    assert android.pause_record == android.pause_frame + 17  # counter byte and tag
    assert android.pause_value == android.pause_record + 3  # a FIRST segment's header
    assert android.pause_packets == 1 and android.pause_value <= 32
    assert legacy.pause_packets == 2 and legacy.pause_value == 20  # MTU 23: 20-byte values
    assert android.known_messages < android.pairing_messages


def test_round_trips_to_the_first_application_frame() -> None:
    assert flights(known=True) == 2  # Noise KK: one round trip, the goal
    # Noise XX (3 flights), commitment, nonce, nonce (3), the confirmations (2): 4 round
    # trips; the goal of 2 needs the commitment and nonces folded into XX's messages
    assert flights(known=False) == 8
