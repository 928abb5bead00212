"""The bridge: a head unit and phones sharing navigation, media and messages over BLE.

Layers, bottom up (each a module you can name):

- ``transports.link``: one ATT value in, one out; the only thing that knows about radios.
- ``bridge.segment``: frames cut to the link's payload size, lanes, credits (sans-IO).
- ``bridge.cbor`` / ``bridge.frame``: strict CBOR frames (sans-IO).
- ``bridge.mux``: channels, priorities, per-channel ordered acknowledged delivery (sans-IO).
- ``bridge.connection``: the above composed for one link, with timers (sans-IO).
- ``bridge.session``: the thin trio driver that runs a connection on a link.
"""

from __future__ import annotations

__version__ = "0.1.0"
