"""The parser's pieces shared by every subcommand: help that keeps hyphenated names whole, and
usage errors as one line with exit status 2."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_DATA = Path("../shared/data")


class Formatter(argparse.HelpFormatter):
    """Wraps help without breaking names at their hyphens (rapid-roles, max-clock)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
