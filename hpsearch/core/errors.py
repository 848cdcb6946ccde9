"""Errors a user can fix. The CLI prints them without a traceback and exits with status 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names the field or file, the value, and the fix."""


class RunDirError(UserError):
    """The run directory is missing, incomplete, or belongs to a different spec."""


class StudyStopped(RuntimeError):
    """The study stopped early (for example too many consecutive failures)."""


EXIT_STOPPED = 1  # the study ran but stopped early (consecutive failures); the run is kept
EXIT_USER_ERROR = 2  # bad input, refused before anything was written
EXIT_INTERRUPTED = 130


def user_error_types() -> tuple[type[BaseException], ...]:
    """UserError and the validation errors of modules already imported (no heavy imports)."""
    import sys

    errors: list[type[BaseException]] = [UserError]
    for module, name in (
        ("search_spaces.space", "SpaceError"),
        ("hpsearch.core.spec", "SpecError"),
        ("hpsearch.core.data", "DataError"),
    ):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, name):
            errors.append(getattr(mod, name))
    return tuple(errors)


def run_cli(parser, argv=None) -> int:
    """Parse ``argv``, run the chosen command; user errors become one ``error:`` line."""
    import os
    import sys

    args = parser.parse_args(argv)
    # TensorFlow's C++ start-up chatter (CPU features, no CUDA driver) is not for users
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, user_error_types()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(exc, StudyStopped):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_STOPPED
        raise
