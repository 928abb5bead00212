"""The bridge's GATT layout and advertising rules (see docs/PROTOCOL.md sections 1-2)."""

from __future__ import annotations

import uuid

SERVICE_UUID = uuid.UUID("6b1e0000-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Written by the head unit (Write Without Response): segments to the phone.
TO_PHONE_UUID = uuid.UUID("6b1e0001-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Notified by the phone: segments to the head unit.
FROM_PHONE_UUID = uuid.UUID("6b1e0002-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Readable: the protocol versions the phone speaks, as a CBOR array of uints.
INFO_UUID = uuid.UUID("6b1e0003-5b5f-4c2d-9a2e-6a3f0b6c1d00")

PROTOCOL_VERSIONS = (0, 1)  # 1: the head unit also as GATT server (PROTOCOL.md 1.2)
MAX_VERSION = 23  # the info value's versions are one-byte CBOR uints


def info_value(versions: tuple[int, ...] = PROTOCOL_VERSIONS) -> bytes:
    """The info characteristic's value: the versions as a CBOR array of small uints."""
    if len(versions) > 23 or any(not 0 <= v <= MAX_VERSION for v in versions):
        raise ValueError("at most 23 versions, each 0 to 23")
    return bytes([0x80 | len(versions), *versions])


def parse_info_value(raw: bytes) -> tuple[int, ...]:
    """The versions in an info value; ValueError (which says what it holds) if it is
    not a CBOR array of small uints (docs/PROTOCOL.md 1)."""
    if not raw or raw[0] >> 5 != 4 or raw[0] & 0x1F > 23 or len(raw) != 1 + (raw[0] & 0x1F):
        raise ValueError(f"info characteristic holds {raw.hex() or 'nothing'}, not a version list")
    if any(b > MAX_VERSION for b in raw[1:]):
        raise ValueError(f"info characteristic lists a version over {MAX_VERSION}")
    return tuple(raw[1:])


#: Legacy advertisement: 31 bytes - flags (3) - 128-bit service UUID list (18) - name AD header (2).
MAX_ADVERTISED_NAME = 8


def advertised_name(name: str) -> str:
    """The Shortened Local Name: at most 8 UTF-8 bytes, cut at a character boundary."""
    out = ""
    for ch in name:
        if len((out + ch).encode()) > MAX_ADVERTISED_NAME:
            break
        out += ch
    return out


def advertising_data(name: str) -> bytes:
    """The phone's legacy advertising data: flags, the service UUID, the shortened name."""
    short = advertised_name(name).encode()
    flags = bytes((2, 0x01, 0x06))  # LE General Discoverable, BR/EDR not supported
    uuids = bytes((17, 0x07)) + SERVICE_UUID.bytes[::-1]
    name_ad = bytes((len(short) + 1, 0x08)) + short if short else b""
    return flags + uuids + name_ad
