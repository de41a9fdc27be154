"""The one exception type users see, and the one warning type.

Anything that is the user's to fix (a config field, a file, a column) raises `FedriskError` with a message
naming the field and the fix; the CLI prints it as one line on stderr and exits non-zero, no traceback.
"""

from __future__ import annotations


class FedriskError(Exception):
    """A problem with the user's input, stated as `<field>: <what is wrong>; <how to fix it>`."""

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}" + (f"; {fix}" if fix else "")
        super().__init__(message)

    def __reduce__(self):  # keep the three parts when the error crosses a process boundary
        return (type(self), (self.field, self.problem, self.fix))


class FedriskWarning(UserWarning):
    """Something in the user's input fedrisk handled but the user should know (e.g. tokens read as missing,
    a damaged unit file recomputed); the CLI prints it as one line, ``warning: <field>: <what>``."""
