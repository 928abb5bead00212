"""Transports: every way the bridge reaches a phone, behind one :class:`~transports.link.Link`.

Only modules in this package may know which BLE library, if any, is underneath.
"""
