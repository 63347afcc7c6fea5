"""Errors a user can cause and fix.

The CLI catches :class:`HybridRecError`, prints its message and exits with status 2, so every
message here must say what is wrong, why it matters and what to do.
"""

from __future__ import annotations

from pathlib import Path


class HybridRecError(Exception):
    """Root of the errors that are the user's to fix (bad data, bad artifact, bad option)."""


class DataError(HybridRecError, ValueError):
    """An input file is unreadable or does not match the expected format.

    Args:
        path: the file at fault.
        message: what is wrong, in words.
        row: 1-based data row (the header is not counted), when one row is at fault.
        line: 1-based line of a text file holding that row (the header is line 1).
        column: the column at fault, when one is.
        expected: what the row or column should have held.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.line = line
        self.column = column
        self.expected = expected
        where = [Path(self.path).name or self.path]  # "." (or an empty path) has no name
        if row is not None:
            where.append(f"row {row}" + (f" (line {line})" if line is not None else ""))
        if column is not None:
            where.append(f"column {column!r}")
        text = ", ".join(where) + ": " + message
        if expected is not None:
            text += f" (expected {expected})"
        super().__init__(text)


class ArtifactError(HybridRecError):
    """A saved model directory is missing, truncated or from an incompatible version."""


class ConfigError(HybridRecError, ValueError):
    """An option has a value outside its allowed range."""


class UnknownIdError(HybridRecError, KeyError):
    """A raw id the model does not know was used where only a known one makes sense.

    A ``KeyError`` too, so ``except KeyError`` (a missing key) catches it as well.
    """

    def __str__(self) -> str:
        # KeyError would show the message quoted, as if it were the key itself
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class TrainingDivergedError(HybridRecError):
    """The loss became NaN or infinite, so the weights are no longer meaningful."""


class HybridRecWarning(UserWarning):
    """Warnings that come with a fix; filtered as a group in tests."""
