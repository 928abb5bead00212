"""The record layer: what turns an encoded frame into the bytes the segmenter carries.

Before pairing (and in the unencrypted demo) a record is the frame's CBOR as it is.
Pairing supplies a record layer that encrypts and authenticates each record; the
connection core calls only this interface, so nothing else changes when it lands.
"""

from __future__ import annotations

import abc


class RecordLayer(abc.ABC):
    #: True when records are encrypted and authenticated.
    encrypted: bool

    @abc.abstractmethod
    def seal(self, plaintext: bytes) -> bytes:
        """Protect one encoded frame for sending."""

    @abc.abstractmethod
    def open(self, record: bytes) -> bytes | None:
        """Check and unprotect one received record: None if it was rejected (and counted),
        ProtocolError once rejections are too many to keep the link."""


class PlaintextRecords(RecordLayer):
    """No protection: records are frames. Used before pairing and by the unencrypted demo."""

    encrypted = False

    def seal(self, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, record: bytes) -> bytes:
        return record
