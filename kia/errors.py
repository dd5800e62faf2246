"""One family of exceptions. The CLI turns any `KiaError` into a one-line message (exit code 2);
set `KIA_DEBUG=1` to see the full traceback instead."""

from __future__ import annotations


class KiaError(Exception):
    """Base class of every error kia raises on purpose."""


class ConfigError(KiaError):
    """A flag, config or policy value is invalid."""


class FactsError(KiaError):
    """A fact file is unreadable or a row in it is invalid.

    The message names the file, the line (1-based, as an editor shows it) and the field.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        suffix = f" (field '{field}')" if field else ""
        super().__init__(f"{prefix}{message}{suffix}")


class ArtifactError(KiaError):
    """A stage folder is missing, incomplete (no manifest.json), locked or inconsistent."""


class EngineError(KiaError):
    """The model or engine could not be loaded or used."""


class AdapterError(KiaError):
    """An adapter is unsafe, mismatched with its base model, or unreadable."""


class JudgeError(KiaError):
    """A judge could not give a verdict: the endpoint timed out, failed or answered something that
    is not a verdict. The pairwise runner records it as a failed judgment, never drops it."""
