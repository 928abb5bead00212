"""GATT layout and advertising rules."""

from __future__ import annotations

from bridge.wire import cbor
from bridge.wire.gatt import (
    PROTOCOL_VERSIONS,
    REQUESTED_PARAMETERS,
    SERVICE_UUID,
    ConnectionParameters,
    advertised_name,
    advertising_data,
    head_unit_advertising,
    info_value,
    wants_parameter_update,
)


def test_advertisement_fits_a_legacy_packet() -> None:
    for name in ["Pixel 9 Pro of Anna", "iPad", "", "Ünïcødé phone", "日本語の電話"]:
        data = advertising_data(name)
        assert len(data) <= 31
        assert SERVICE_UUID.bytes[::-1] in data
    assert advertised_name("Pixel 9 Pro") == "Pixel 9 "
    assert advertised_name("日本語の電話") == "日本"  # 6 bytes: a third character would need 9
    assert len(advertising_data("Pixel 9 Pro")) == 31


def test_info_value_is_cbor() -> None:
    assert cbor.loads(cbor.dumps(list(PROTOCOL_VERSIONS))) == [0, 1, 2]
    assert info_value() == bytes.fromhex("83000102")  # PROTOCOL.md 1


def test_the_requested_connection_parameters_keep_apples_rules() -> None:
    assert REQUESTED_PARAMETERS.apple_violations() == []
    assert ConnectionParameters(15, 30, 4, 6000).apple_violations() == []
    assert ConnectionParameters(7.5, 30, 0, 6000).apple_violations() == [
        "minimum interval not a multiple of 15 ms"
    ]
    assert ConnectionParameters(30, 30, 31, 2000).apple_violations() == [
        "peripheral latency above 30",
        "supervision timeout outside 6 to 18 s",
        "maximum interval below minimum + 15 ms",
        "supervision timeout not above 3 x interval x (latency + 1)",
    ]
    assert ConnectionParameters(15, 1200, 5, 18000).apple_violations() == [
        "maximum interval x (latency + 1) above 6 s",
        "supervision timeout not above 3 x interval x (latency + 1)",
    ]
    assert wants_parameter_update(30.0, 0) and wants_parameter_update(15.0, 2)
    assert not wants_parameter_update(15.0, 0) and not wants_parameter_update(7.5, 0)


def test_pairing_mode_solicits_ancs_for_iphones_without_the_app() -> None:
    data, scan = head_unit_advertising(bytes(6), "Demo car", solicit_ancs=True)
    assert len(data) == 31 and len(scan) <= 31
    assert scan[:2] == bytes((17, 0x15))
    assert scan[2:18] == bytes.fromhex("d0002d121e4b0fa4994eceb531f40579")
    assert scan[18:] == bytes((9, 0x09)) + b"Demo car"
    _, long_name = head_unit_advertising(bytes(6), "Family estate car", solicit_ancs=True)
    assert len(long_name) == 31 and long_name[18:20] == bytes((12, 0x08))
    assert long_name[20:] == b"Family esta"  # shortened, in the 11 bytes left
    _, outside = head_unit_advertising(bytes(6), None, solicit_ancs=True)
    assert outside == b""  # nothing solicited outside pairing mode
