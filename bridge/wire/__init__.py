"""The wire core: the bridge protocol's bytes, sans-IO (docs/PROTOCOL.md).

Bottom up: :mod:`~bridge.wire.errors` (the two error families), :mod:`~bridge.wire.cbor`
(strict CBOR), :mod:`~bridge.wire.channels` (channel and control-type numbers, priorities),
:mod:`~bridge.wire.frame` (frames), :mod:`~bridge.wire.record` (the record-layer interface
and plaintext records), :mod:`~bridge.wire.segment` (segments, lanes, credits),
:mod:`~bridge.wire.mux` (channels, ordered acknowledged delivery across links),
:mod:`~bridge.wire.codec` and :mod:`~bridge.wire.messages` (typed messages),
:mod:`~bridge.wire.gatt` (the GATT layout and the info value).

It imports the standard library and cbor2 only: no trio, no radio, nothing of the rest
of the project (``tests/test_layering.py``). ``pairing`` and ``transports`` stand on it.
"""
