"""Every failure a user can cause is a DevsecretsError: one line, a hint, exit code 1.

Messages name secrets, files and keys; they never carry a secret value.
"""

from __future__ import annotations


class DevsecretsError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def error_lines(error: DevsecretsError) -> str:
    """The one or two lines a user sees: `devsecrets: error: …` and maybe `… hint: …`."""
    text = f"devsecrets: error: {error.message}\n"
    return text + (f"devsecrets: hint: {error.hint}\n" if error.hint else "")


def exit_code_for(error: DevsecretsError) -> int:
    return 2 if isinstance(error, UsageProblem) else error.exit_code


class UsageProblem(DevsecretsError):
    """Bad input from the command line that click itself cannot see (a bad name, a size)."""


class StoreError(DevsecretsError):
    pass


class StoreNotFoundError(StoreError):
    pass


class SecretNotFoundError(StoreError):
    pass


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
