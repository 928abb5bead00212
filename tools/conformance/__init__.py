"""``bridge-conformance``: numbered cases that check a phone against docs/PROTOCOL.md."""
