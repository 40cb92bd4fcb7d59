"""The argparse pieces every subcommand shares: a parser whose usage errors are one line,
the help formatter, and the number types of the flags (each refusal one clear message)."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable

from ..checks import require_positive
from ..exceptions import OptionError


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and exit code 2)."""

    def error(self, message: str) -> typing.NoReturn:
        message = " ".join(message.split())  # one line, whatever the user typed
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help with the description's line breaks kept."""


def whole_number_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``, else one clear message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


nonnegative_int = whole_number_at_least(0)
positive_int = whole_number_at_least(1)


def seed(text: str) -> int:
    """An argparse type: a random seed, a whole number in [0, 2**32)."""
    value = nonnegative_int(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f"must be < 2**32, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (:func:`~predcode.checks.require_positive`'s
    message, as argparse's error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got '{text}'") from None
    try:
        return require_positive(value, "the value")
    except OptionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
