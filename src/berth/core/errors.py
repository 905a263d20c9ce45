"""berth's own exception tree.

Every error a person can act on carries a sentence (what is wrong) and a hint
(what to do). The CLI prints both on one line; the detail goes to the log.
None of them is an OSError: an `except OSError` around a system call must
never swallow one of berth's own refusals.
"""

import os


class BerthError(Exception):
    """A known failure: `message` says what is wrong, `hint` what to do."""

    hint = ""

    def __init__(self, message, hint=None):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def one_line(self):
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(BerthError, ValueError):
    hint = "fix the config file (see 'berth config --example')"


class UserRefused(BerthError, ValueError):
    """The name is not a user berth serves (bad name, unknown, root, system user)."""


class NotTrusted(BerthError):
    """A file or directory root would act on is writable by someone else."""


class LeaseFileCorrupt(BerthError):
    pass


class SubnetsExhausted(BerthError):
    pass


class MissingBinary(BerthError):
    pass


class NetworkError(BerthError):
    pass


class DaemonError(BerthError):
    pass


class LockTimeout(BerthError):
    pass


def need_root(command, why):
    """Refuse `berth COMMAND` to anyone but root, saying why it needs root."""
    if os.geteuid() != 0:
        raise BerthError(f"'berth {command}' needs root: {why}", hint=f"run it with sudo (sudo berth {command} ...)")
