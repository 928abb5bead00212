"""Developer tools on top of everything: bridge-phone (the phone emulator as a command),
bridge-dump and the Wireshark dissector, benchmarks, the soak, fuzzing, the screen demo
and the BlueZ VM lane."""
