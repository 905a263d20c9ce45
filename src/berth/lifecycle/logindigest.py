"""What the login hook needs of the config, where it reads it in microseconds.

A PAM line without --run-dir (written by hand, or naming a --config) would
have every warm login read the config: tomllib, dataclasses and ipaddress
alone take ~55 ms, and a warm login must stay within 2.5x a bare
interpreter. So the hook, each time it has read the config, leaves the
three values it needs (the run dir and the uid range) in a digest, root's
alone, which names the config file's identity (device, inode, size, mtime and
ctime to the nanosecond) and berth's version: a config edited, replaced
or removed, or a berth upgraded, is read again, never trusted stale.

Imports nothing heavy: this is on the warm login path.
"""

import os
from collections import namedtuple

from berth import __version__
from berth.core import keyvalue
from berth.core.errors import BerthError
from berth.core.fsutil import atomic_write, ensure_dir, read_trusted
from berth.core.paths import ROOT_ONLY

DIR = "/run/berth-login"

Digest = namedtuple("Digest", "run_dir min_uid max_uid")


def path_for(config_path, directory=None):
    """The digest of one config file: its absolute path, as one file name."""
    name = os.path.abspath(config_path).replace("%", "%25").replace("/", "%2F")
    return os.path.join(directory or DIR, name)


def identity(config_path):
    """The config file as it is now ("absent": berth's defaults apply)."""
    try:
        st = os.stat(config_path)
    except FileNotFoundError:
        return "absent"
    # ctime too: no one sets it back, as anyone may set mtime (touch -d).
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def read(config_path, directory=None):
    """The digest of the config as it is now, or None (none, or stale)."""
    try:
        current = identity(config_path)
        raw = read_trusted(path_for(config_path, directory))
    except (OSError, BerthError):  # unreadable, or not root's: read the config instead
        return None
    if raw is None:
        return None
    try:
        data = keyvalue.parse(raw)
        if data["identity"] != current or data["version"] != __version__:
            return None
        return Digest(data["run_dir"], int(data["min_uid"]), int(data["max_uid"]))
    except (ValueError, KeyError, UnicodeDecodeError):
        return None


def write(config_path, cfg, seen, directory=None):
    """Leave the digest of `cfg`, read from `config_path` while it had the
    identity `seen` (taken before reading: a change while it was read
    leaves a digest no later login trusts). Never fails a login."""
    if os.geteuid() != 0 or len(os.path.basename(path_for(config_path, directory))) > 255:
        return False
    try:
        text = keyvalue.render({"identity": seen, "version": __version__, "run_dir": cfg.paths.run_dir,
                                "min_uid": cfg.users.min_uid, "max_uid": cfg.users.max_uid})
        ensure_dir(directory or DIR, ROOT_ONLY)
        atomic_write(path_for(config_path, directory), text, mode=0o600)
    except (OSError, BerthError, ValueError):  # a run_dir with a newline: no digest, the slow path
        return False
    return True
