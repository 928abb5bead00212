"""Developer tools: benchmarks, and later the packet-dump tool and the phone emulator."""
