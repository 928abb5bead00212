"""The terminal's y/N question for a pairing code (``bridge pair``, ``bridge demo``).

Its own module so that ``bridge run`` does not load the demo (and with it
``trio.testing``, which loads pytest where it is installed) to reach it.
"""

from __future__ import annotations

import trio


def _prompt(question: str) -> str:
    try:
        return input(question)
    except EOFError:  # Ctrl-D: no answer is a rejection
        return ""


async def ask_code(code: str) -> bool:
    """Ask on the terminal whether the phone shows ``code``; True for y/yes."""
    answer = await trio.to_thread.run_sync(
        _prompt,
        f"Does the phone show {code}? Confirm on the head unit [y/N] ",
        abandon_on_cancel=True,  # Ctrl-C at the prompt ends the command
    )
    return answer.strip().lower() in ("y", "yes")


async def assume_yes(code: str) -> bool:
    """The answer of ``--yes``: every code confirmed."""
    return True
