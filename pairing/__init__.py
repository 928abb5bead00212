"""Pairing and encrypted sessions (Noise handshake, trust store, record protection).

The connection core already routes every frame through a record layer
(:class:`bridge.record.RecordLayer`); this package will provide the encrypting one.
"""
