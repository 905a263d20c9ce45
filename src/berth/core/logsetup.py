"""Logging handlers, configured only by the entry points (the CLI and the PAM
hook): berth's log file, syslog for the hook, and a one-line terminal form."""

import logging
import os

from berth.core.paths import BERTH_LOG, own_log

FILE_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


class _Brief(logging.Formatter):
    """One line for people: no traceback on the terminal unless --debug."""

    def format(self, record):
        return "berth: " + record.getMessage()


def _no_tracebacks(record):
    # Records with a traceback are for the log file; the terminal gets the
    # one-line sentence the entry point prints.
    return record.exc_info is None


def add_file(root, cfg, level):
    """berth.log in the configured log dir; returns its path, or None."""
    if cfg is None or os.geteuid() != 0:
        return None
    path = own_log(cfg.paths.log_dir, BERTH_LOG)
    try:
        # Root's alone: it names every user, their blocks and their failures.
        os.makedirs(cfg.paths.log_dir, mode=0o700, exist_ok=True)
        if os.path.exists(path) and os.stat(path).st_mode & 0o077:
            # Made readable by an older berth: a user may hold it open, and a
            # chmod would not close that. Lines from now on go to a new inode.
            os.chmod(path, 0o600)
            os.replace(path, path + ".old")
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600))
        handler = logging.FileHandler(path)
    except OSError:
        return None
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    root.addHandler(handler)
    return path


def for_cli(cfg, debug):
    root = logging.getLogger("berth")
    for handler in list(root.handlers):  # configured once per run, whoever called before
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG)
    err = logging.StreamHandler()
    if debug:
        err.setLevel(logging.DEBUG)
        err.setFormatter(logging.Formatter("berth: %(levelname)s %(name)s: %(message)s"))
    else:
        err.setLevel(logging.WARNING)
        err.setFormatter(_Brief())
        err.addFilter(_no_tracebacks)
    root.addHandler(err)
    return add_file(root, cfg, logging.DEBUG if debug else logging.INFO)


def for_hook(cfg):
    """The PAM hook logs to berth.log and syslog (auth facility), never to the
    terminal: what the user sees is the one line the hook prints."""
    root = logging.getLogger("berth")
    if getattr(root, "_berth_hook", False):
        return root
    root._berth_hook = True
    root.setLevel(logging.INFO)
    root.addHandler(logging.NullHandler())  # never Python's last-resort stderr
    add_file(root, cfg, logging.INFO)
    if os.path.exists("/dev/log"):
        try:
            from logging import handlers  # the hook's alone: 7 ms of every CLI start otherwise

            syslog = handlers.SysLogHandler("/dev/log", facility=handlers.SysLogHandler.LOG_AUTHPRIV)
            syslog.setFormatter(logging.Formatter("berth[%(process)d]: %(message)s"))
            syslog.setLevel(logging.INFO)
            root.addHandler(syslog)
        except OSError:
            pass
    return root
