"""Rich consoles that never hard-wrap when the output is not a terminal (logs, pipes, CI)."""

from __future__ import annotations

# Width of a console writing to a file or pipe: wide enough that no table or metric line wraps.
PIPE_WIDTH = 10_000


def make_console(stderr: bool = False):
    """A rich console on stdout (or stderr); when the output is not a terminal nothing is wrapped: tables take their
    natural width and long lines stay one line."""
    from rich.console import Console

    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
