"""The phone side: an app model of a phone, the emulated phone on a radio, its scripted
drive, and the demos that run a head unit with emulated phones.

For tests, demos, benchmarks and ``bridge-phone``; ``bridge run`` never imports it
(``tests/test_layering.py``). It stands on the head unit's layers (sessions, endpoints)
and on the transports, never the other way round.
"""
