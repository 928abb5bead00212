"""The bridge's GATT layout and advertising rules (see docs/PROTOCOL.md sections 1-2)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bridge.wire.apple import ANCS_SERVICE

SERVICE_UUID = uuid.UUID("6b1e0000-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Written by the head unit (Write Without Response): segments to the phone.
TO_PHONE_UUID = uuid.UUID("6b1e0001-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Notified by the phone: segments to the head unit.
FROM_PHONE_UUID = uuid.UUID("6b1e0002-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Readable: the protocol versions the phone speaks, as a CBOR array of uints.
INFO_UUID = uuid.UUID("6b1e0003-5b5f-4c2d-9a2e-6a3f0b6c1d00")
#: Only on a head unit acting as GATT server (v1): read, the link's 16-byte challenge;
#: written (with response), the phone's 16-byte identify tag (docs/PROTOCOL.md 1.2).
IDENTIFY_UUID = uuid.UUID("6b1e0004-5b5f-4c2d-9a2e-6a3f0b6c1d00")
CHALLENGE_SIZE = 16
IDENTIFY_TAG_SIZE = 16
# In both roles the GATT client writes segments to the first characteristic and the GATT
# server notifies them on the second: the names say which for the phone-as-server layout.
TO_SERVER_UUID = TO_PHONE_UUID
FROM_SERVER_UUID = FROM_PHONE_UUID

#: 1: the head unit also as GATT server (PROTOCOL.md 1.2); 2: the phone's shortcuts (6.1)
PROTOCOL_VERSIONS = (0, 1, 2)
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


#: The head unit's advertising token travels in manufacturer-specific data under the
#: SIG's company identifier for tests and unassigned use, until the project has its own.
TOKEN_COMPANY = 0xFFFF
#: Bytes of the head unit's advertised token: r (3) || tag (3) (pairing/privacy.py).
TOKEN_BYTES = 6
#: A scan response holds 31 bytes: the Complete Local Name's AD header takes 2.
MAX_SCAN_RESPONSE_NAME = 29


def _cut(name: str, limit: int) -> bytes:
    out = b""
    for ch in name:
        if len(out + ch.encode()) > limit:
            break
        out += ch.encode()
    return out


#: The name's room in a scan response that also solicits ANCS (31 - 18 - 2).
MAX_NAME_BESIDE_SOLICITATION = 11


def head_unit_advertising(
    token: bytes, name: str | None, *, solicit_ancs: bool = False
) -> tuple[bytes, bytes]:
    """The head unit's legacy advertising data and scan response (protocol v1, section
    2.2): flags (LE Limited Discoverable in pairing mode, else not discoverable), the
    service UUID, the 6-byte token as manufacturer data, exactly 31 bytes; in pairing
    mode (``name`` given) the scan response carries the Complete Local Name, else it
    is empty. ``solicit_ancs`` (pairing mode only): the scan response starts with a
    128-bit Service Solicitation of ANCS, and the name gets the 11 bytes left (a
    Shortened Local Name when cut)."""
    if len(token) != TOKEN_BYTES:
        raise ValueError("the head unit's token is 6 bytes")
    flags = bytes((2, 0x01, 0x05 if name is not None else 0x04))
    uuids = bytes((17, 0x07)) + SERVICE_UUID.bytes[::-1]
    maker = bytes((3 + TOKEN_BYTES, 0xFF)) + TOKEN_COMPANY.to_bytes(2, "little") + token
    scan_response = b""
    if name is not None:
        room = MAX_NAME_BESIDE_SOLICITATION if solicit_ancs else MAX_SCAN_RESPONSE_NAME
        encoded = _cut(name, room)
        kind = 0x09 if encoded == name.encode() else 0x08  # complete, or shortened
        scan_response = bytes((len(encoded) + 1, kind)) + encoded if encoded else b""
        if solicit_ancs:
            scan_response = bytes((17, 0x15)) + ANCS_SERVICE.bytes[::-1] + scan_response
    return flags + uuids + maker, scan_response


@dataclass(frozen=True)
class ConnectionParameters:
    """LE connection parameters as a peripheral asks for them (L2CAP Connection
    Parameter Update Request): intervals and timeout in milliseconds, latency in events."""

    interval_min_ms: float
    interval_max_ms: float
    latency: int
    supervision_timeout_ms: float

    def apple_violations(self) -> list[str]:
        """The rules of Apple's accessory guidelines (../shared/notes/peripheral-role.md)
        that these parameters break; empty when an iPhone would accept them."""
        broken = []
        if self.latency > 30:
            broken.append("peripheral latency above 30")
        if not 6000 <= self.supervision_timeout_ms <= 18000:
            broken.append("supervision timeout outside 6 to 18 s")
        if self.interval_min_ms < 15 or self.interval_min_ms % 15:
            broken.append("minimum interval not a multiple of 15 ms")
        both_15 = self.interval_min_ms == self.interval_max_ms == 15
        if not both_15 and self.interval_max_ms < self.interval_min_ms + 15:
            broken.append("maximum interval below minimum + 15 ms")
        span = self.interval_max_ms * (self.latency + 1)
        if span > 6000:
            broken.append("maximum interval x (latency + 1) above 6 s")
        if self.supervision_timeout_ms <= span * 3:
            broken.append("supervision timeout not above 3 x interval x (latency + 1)")
        return broken


#: What the head unit as peripheral asks a central for (PROTOCOL.md 2.4): the shortest
#: interval Apple allows, so a tap on pause is at most one 15 ms event from the air, no
#: peripheral latency (the car is powered), and Apple's shortest supervision timeout.
REQUESTED_PARAMETERS = ConnectionParameters(15.0, 15.0, 0, 6000.0)


def wants_parameter_update(interval_ms: float, latency: int) -> bool:
    """Whether the head unit asks for :data:`REQUESTED_PARAMETERS` on a connection a
    central opened with these: only when it is slower (a longer interval, or latency);
    a central that chose a shorter interval (Android's 7.5 ms) is left alone."""
    wanted = REQUESTED_PARAMETERS
    return interval_ms > wanted.interval_max_ms + 1e-6 or latency > wanted.latency
