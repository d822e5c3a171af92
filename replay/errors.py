"""Errors of the replay package."""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error `replay` raises; the message names the bad value and its source."""


class ImportCsvError(ReplayError):
    """A plant log that does not follow the documented CSV layout (names row and column).

    `line` is the 1-based line of the CSV file (1 is the header) and `column` the column name,
    where the error has them (None for problems of the whole file).
    """

    def __init__(self, message: str, *, line: int | None = None, column: str | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


class PlantDataError(ReplayError):
    """A batch of plant rows (JSON objects or CSV text) that breaks the plant-log layout.

    `row` is the 1-based row within the batch (None for a problem of the columns or of the
    whole batch) and `column` the column name (None for a problem of a whole row); `problem`
    is the message without its `source: row N, column 'C': ` prefix.
    """

    def __init__(
        self, message: str, *, row: int | None = None, column: str | None = None, problem: str = ""
    ):
        super().__init__(message)
        self.row = row
        self.column = column
        self.problem = problem or message
