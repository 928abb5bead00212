"""Coverage-guided fuzzing of every decoder with atheris:
``python -m tools.fuzz TARGET [atheris/libFuzzer options, e.g. -runs=1000000]``.

Install the fuzzer first: ``pip install -e '.[fuzz]'``. The invariant, for every target
and every input: the decoder returns, or raises the project's
:class:`~bridge.wire.errors.ProtocolError`; any other exception is a crash, which libFuzzer
reports with the input that caused it (saved as ``crash-*``). ``--list`` names the
targets. The hypothesis suites in tests/ check the same invariant in CI, bounded.
"""

from __future__ import annotations

import contextlib
import os
import sys

import atheris

with atheris.instrument_imports():  # coverage of everything the targets import
    from bridge.wire.errors import ProtocolError
    from tools.fuzz.targets import TARGETS


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "--list") or args[0] not in TARGETS:
        print(__doc__, file=sys.stderr)
        print(f"targets: {', '.join(TARGETS)}", file=sys.stderr)
        sys.exit(0 if args and args[0] in ("-h", "--help", "--list") else 2)
    target = TARGETS[args[0]]

    def one_input(data: bytes) -> None:
        with contextlib.suppress(ProtocolError):
            target(data)

    atheris.Setup([sys.argv[0], *args[1:]], one_input)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Fuzz()


if __name__ == "__main__":
    main()
