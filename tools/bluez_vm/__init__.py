"""A real-BlueZ lane: the bridge against BlueZ and the Linux Bluetooth stack in a QEMU VM."""
