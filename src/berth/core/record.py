"""berth's record of the dockerd it started for a user: pid, start time and
when. Reading it and checking it against /proc is all the warm login path
needs, so this module imports nothing heavy: the record is `key=value`
lines, not JSON (json imports re, and re enum: most of a warm login)."""

from collections import namedtuple

from berth.core import keyvalue, proc
from berth.core.fsutil import atomic_write, read_trusted

# bridge is recorded so the login check needs no config to find it; mode
# ("hardened" / "trusted") is what the daemon was started with, which a
# changed config does not change until it restarts; containerd is the
# socket of the shared containerd it was given ("": a containerd of its own).
DaemonRecord = namedtuple("DaemonRecord", "pid start_ticks started_at dockerd bridge mode containerd",
                          defaults=("", "trusted", ""))


TYPES = {"pid": int, "start_ticks": int, "started_at": float, "dockerd": str, "bridge": str, "mode": str,
         "containerd": str}


def read(upaths):
    """The recorded daemon, or None. Says nothing about whether it runs."""
    raw = read_trusted(upaths.record)
    if raw is None:
        return None
    try:
        data = keyvalue.parse(raw)
        # A key this berth does not know (a newer one's) is left out, never
        # an error: a daemon started before an up- or downgrade must still be
        # recognised, never killed as a stranger.
        known = {k: TYPES[k](data[k]) for k in DaemonRecord._fields if k in data}
        return DaemonRecord(**known)
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def write(upaths, rec):
    atomic_write(upaths.record, keyvalue.render(rec._asdict()), mode=0o600)


def is_ours(upaths, rec):
    """The recorded pid is still the dockerd berth started for this user:
    same start time, not a zombie, and our daemon.json on its command line."""
    if rec is None or not proc.alive(rec.pid, rec.start_ticks):
        return False
    return upaths.daemon_json in proc.cmdline(rec.pid)


def running(upaths):
    rec = read(upaths)
    return rec if is_ours(upaths, rec) else None
