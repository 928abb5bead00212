"""The atheris harness's targets (tools/fuzz/targets.py), checked with hypothesis: random
and near-valid inputs give results or the project's protocol error, nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.wire.errors import ProtocolError
from tools.fuzz.targets import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600))
def test_only_protocol_errors(name: str, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        TARGETS[name](data)


def test_every_decoder_has_a_target() -> None:
    assert set(TARGETS) == {
        "segments", "segment", "cbor", "frame", "message", "record", "handshake", "capture",
        "ancs", "ancs-command", "ams",
    }  # fmt: skip
