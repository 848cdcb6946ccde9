"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field or file, the value, and the fix."""


class RunDirError(UserError):
    """The run directory is missing, incomplete, or belongs to a different spec."""


class StudyStopped(RuntimeError):
    """The study stopped early (for example too many consecutive failures)."""
