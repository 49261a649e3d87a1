"""The argument parser shared by rlfm's own commands: errors are one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def yes_no(text: str) -> bool:
    """``yes``/``no`` (or true/false, 1/0) as a bool, for argparse's ``type``."""
    value = text.strip().lower()
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def prepare_out_dir(out: Path) -> None:
    """Create the output directory ``out`` and check that a file can be written in it (``ValueError`` if not)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise ValueError(f"--out {out} is not a writable directory ({error.strerror or error})") from None
