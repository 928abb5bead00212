"""Pairing and encrypted sessions: the Noise Protocol Framework, the bridge's handshake
(KK to reconnect, XX with a committed numeric comparison to pair), encrypted records,
private recognition tokens, the trust store and the opt-in key log (docs/SECURITY.md).

Sans-IO except the trust store's and key log's files; stands on :mod:`bridge.wire` only.
"""
