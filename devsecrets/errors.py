"""Every failure a user can cause is a DevsecretsError: one line, a hint, a documented exit code.

The exit-code table lives here (README "Exit codes"); `entry.guarded` is the one place that
turns an exception into a code. Messages name secrets, files and keys; never a secret value.
A foreign exception (OSError, a subprocess timeout, YAML) is converted where it enters the
project, with `raise ...Error(...) from e`, so none reaches the user raw.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # an expected failure: a DevsecretsError, one line and maybe a hint
EXIT_USAGE = 2  # the command line is wrong (click's own errors, and UsageProblem)
EXIT_BUG = 3  # an unexpected exception: a bug, shown with its traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), after the cleanup ran


class DevsecretsError(Exception):
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def error_lines(error: DevsecretsError) -> str:
    """The one or two lines a user sees: `devsecrets: error: …` and maybe `… hint: …`."""
    text = f"devsecrets: error: {error.message}\n"
    return text + (f"devsecrets: hint: {error.hint}\n" if error.hint else "")


def exit_code_for(error: DevsecretsError) -> int:
    return error.exit_code


def reason(error: OSError) -> str:
    """An OSError in a few words, without the path (the caller names what it was doing)."""
    return (error.strerror or error.__class__.__name__).lower()


class UsageProblem(DevsecretsError):
    """Bad input on the command line that click itself cannot see (a bad name, a size).
    Not for bad files: a stack file or a stored value is not the command line."""

    exit_code = EXIT_USAGE


class StoreError(DevsecretsError):
    pass


class StoreNotFoundError(StoreError):
    pass


class SecretNotFoundError(StoreError):
    pass


class MissingSecretsError(StoreError):
    """The stack needs secrets the store does not hold."""


class EmptySecretError(StoreError):
    """A stored value is empty, which Swarm refuses."""


class NoIdentityError(StoreError):
    pass


class DecryptError(StoreError):
    """No identity we hold opens the file."""


class IntegrityError(StoreError):
    """The file is not what it claims: tampered, truncated, swapped or not SOPS at all."""


class RecipientError(StoreError):
    pass


class ConcurrentChangeError(StoreError):
    """The stored file changed between reading and writing (edit vs. a set or a git pull)."""


class TmpfsError(DevsecretsError):
    pass


class EditError(DevsecretsError):
    pass


class StackError(DevsecretsError):
    pass


class ComposeError(DevsecretsError):
    pass


class MaterializeError(DevsecretsError):
    pass
