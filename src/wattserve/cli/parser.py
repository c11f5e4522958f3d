"""The parser's pieces shared by every subcommand: help that keeps hyphenated names whole, and
usage errors as one line with exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
"""The shared data folder beside the repository (../shared/data from its root), wherever the command
is run from: a path relative to the working folder would point elsewhere from any other folder."""


class Formatter(argparse.HelpFormatter):
    """Wraps help without breaking names at their hyphens (rapid-roles, max-clock)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Unrecognized flags reported by the subcommand that got them (`wattserve simulate: error:`),
        not by the top-level parser, which only sees them after the subcommand has finished."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self
            command = getattr(parsed, "command", None)
            for action in self._actions:
                if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                    owner = action.choices[command]
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
