"""Channels and priorities: the names the multiplexer and the wire use."""

from __future__ import annotations

from enum import IntEnum


class Channel(IntEnum):
    """Logical channels multiplexed on one link. Each is ordered and acknowledged."""

    CONTROL = 0
    NAVIGATION = 1
    AUDIO = 2
    MESSAGING = 3
    BULK = 4  # large objects (album art, maneuver images) in chunks, lowest priority


class Priority(IntEnum):
    """Priority classes; each is one segmentation lane (lower goes first)."""

    URGENT = 0
    INTERACTIVE = 1
    NORMAL = 2
    BULK = 3


CHANNEL_PRIORITY: dict[Channel, Priority] = {
    Channel.CONTROL: Priority.URGENT,
    Channel.AUDIO: Priority.INTERACTIVE,
    Channel.NAVIGATION: Priority.INTERACTIVE,
    Channel.MESSAGING: Priority.NORMAL,
    Channel.BULK: Priority.BULK,
}


class ControlType(IntEnum):
    """Message types of the control channel used by the connection itself."""

    ACK = 1  # unsequenced; body {channel: highest seq received in order}
    KEEPALIVE = 2  # unsequenced; empty body
    CLOSE = 3  # unsequenced; body {0: reason code, 1: text}
    HANDSHAKE = 4  # unsequenced, in the clear: Noise messages (pairing/handshake.py)
    PAIRING = 5  # unsequenced, encrypted: the numeric comparison
    HELLO = 6  # unsequenced: versions and capabilities, first after authentication
    ERROR = 7  # sequenced: a message the receiver could not use
    SHORTCUTS = 8  # sequenced, version 2: the phone's shortcuts for the car's launcher
    LAUNCH = 9  # sequenced, version 2, head unit -> phone: open a shortcut
    LAUNCH_RESULT = 10  # sequenced, version 2: what a launch did


class CloseCode(IntEnum):
    """Reasons carried by a CLOSE frame (0 is a normal close; others are ErrorCode values)."""

    NORMAL = 0
