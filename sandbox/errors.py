"""User-facing errors.

Every error a user can cause with bad input derives from :class:`SandboxError`. Command-line entry points catch it and
print its message as one line (``error: ...``) with a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

from typing import Iterable


class SandboxError(Exception):
    """Base class of errors caused by user input; the message is one self-contained line."""


class UnknownNameError(SandboxError, LookupError):
    """A registry key that does not exist."""

    def __str__(self) -> str:  # LookupError would repr() the message in quotes
        return str(self.args[0]) if self.args else ""


class OptionError(SandboxError, ValueError):
    """An option a component does not take, or a value outside what it accepts."""


def check_choice(what: str, value, choices: Iterable) -> None:
    """Raise :class:`OptionError` unless ``value`` is one of ``choices``.

    Example message: ``k_mode='fix' is not one of 'fixed', 'learnable', 'predicted', 'predicted_shared'``.
    """
    choices = tuple(choices)
    if value not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise OptionError(f"{what}={value!r} is not one of {shown}")


def is_int(value) -> bool:
    """True for ints but not bools (``True`` is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(what: str, value, minimum: int = 1, odd: bool = False, multiple_of: int = 1, hint: str = "") -> None:
    """Raise :class:`OptionError` unless ``value`` is an int >= ``minimum`` (odd / a multiple of ``multiple_of``).

    Example message: ``kernel_size=4 is not valid; expected an odd integer >= 1 (3, 5, 7, ...)``.
    """
    if not (is_int(value) and value >= minimum and (value % 2 == 1 or not odd) and value % multiple_of == 0):
        kind = "an odd integer" if odd else f"a multiple of {multiple_of}" if multiple_of > 1 else "an integer"
        raise OptionError(f"{what}={value!r} is not valid; expected {kind} >= {minimum}{hint}")


def check_positive(what: str, value, allow_zero: bool = False) -> None:
    """Raise :class:`OptionError` unless ``value`` is a number > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise OptionError(f"{what}={value!r} is not valid; expected a number {bound}")
