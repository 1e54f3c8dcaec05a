"""Exception types. Every error a user can cause is one of these, with a message naming the culprit."""

from __future__ import annotations

from pathlib import Path


class EmbedEnsembleError(Exception):
    """Base class of every error raised on purpose by embedensemble."""


class DataError(EmbedEnsembleError, ValueError):
    """A data file (or in-memory input) is malformed; says which file, row and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.row = row
        self.column = column
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class ConfigError(EmbedEnsembleError, ValueError):
    """A configuration file or argument is invalid (unknown key, wrong type, bad value)."""


class WeightsNotFoundError(EmbedEnsembleError, FileNotFoundError):
    """Model weights are not available offline; the message says which package or path supplies them."""


class RunNotFoundError(EmbedEnsembleError, FileNotFoundError):
    """A run folder does not exist or lacks what a step needs."""


class NumericalError(EmbedEnsembleError, FloatingPointError):
    """A model produced NaN or infinite values (a diverged fine-tune, an overflow); says where."""


class ArtifactError(EmbedEnsembleError):
    """A saved ensemble or run folder is damaged or inconsistent."""


class UnsafeArtifactError(ArtifactError):
    """A saved folder holds something that could execute code on load (a pickle) or fails its checksums."""


class FormatVersionError(ArtifactError):
    """A saved folder was written in a format version this library cannot read."""


class InconsistentVersionWarning(UserWarning):
    """A saved folder was written with another major.minor version of a library it depends on
    (as scikit-learn's warning of the same name): loading proceeds, results may differ."""

    def __init__(self, library: str, saved_version: str, installed_version: str | None, message: str) -> None:
        self.library = library
        self.saved_version = saved_version
        self.installed_version = installed_version
        super().__init__(message)
