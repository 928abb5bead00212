"""The head unit: phones and tablets share navigation, media and messages with a car
screen over BLE (docs/ARCHITECTURE.md has the layer picture).

Rooms: :mod:`bridge.wire` (the protocol's bytes, sans-IO), then this package (one link's
protocol state, the trio session, the head unit's view of each phone, its radio policy,
the message store, the local API, the service and its configuration), then
:mod:`bridge.emulation` (the phone side and the demos) and :mod:`bridge.cli` (the
``bridge`` command). ``pairing`` and ``transports`` sit between the wire core and this
package.
"""

from __future__ import annotations

__version__ = "0.1.0"
