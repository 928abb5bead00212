"""GATT layout and advertising rules."""

from __future__ import annotations

from bridge.wire import cbor
from bridge.wire.gatt import PROTOCOL_VERSIONS, SERVICE_UUID, advertised_name, advertising_data


def test_advertisement_fits_a_legacy_packet() -> None:
    for name in ["Pixel 9 Pro of Anna", "iPad", "", "Ünïcødé phone", "日本語の電話"]:
        data = advertising_data(name)
        assert len(data) <= 31
        assert SERVICE_UUID.bytes[::-1] in data
    assert advertised_name("Pixel 9 Pro") == "Pixel 9 "
    assert advertised_name("日本語の電話") == "日本"  # 6 bytes: a third character would need 9
    assert len(advertising_data("Pixel 9 Pro")) == 31


def test_info_value_is_cbor() -> None:
    assert cbor.loads(cbor.dumps(list(PROTOCOL_VERSIONS))) == [0, 1]
