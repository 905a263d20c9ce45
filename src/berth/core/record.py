"""berth's records of the processes it supervises: pid, start time, and
what else tells the process apart. A user's dockerd has one (read on
every warm login), and so has the shared containerd; the policy proxy is
found by its control socket instead. Reading one and checking it against
/proc is all the warm login path needs, so this module imports nothing
heavy: a record is `key=value` lines, not JSON (json imports re, and re
enum: most of a warm login)."""

from collections import namedtuple

from berth.core import keyvalue, proc
from berth.core.fsutil import atomic_write, read_trusted

# Any supervised process: who it is (a pid alone may have been reused).
Process = namedtuple("Process", "pid start_ticks")

# A user's dockerd. bridge is recorded so the login check needs no config
# to find it; mode ("hardened" / "trusted") is what the daemon was started
# with, which a changed config does not change until it restarts;
# containerd is the socket of the shared containerd it was given ("": a
# containerd of its own).
DaemonRecord = namedtuple("DaemonRecord", "pid start_ticks started_at dockerd bridge mode containerd",
                          defaults=("", "trusted", ""))

# Fields of another type than text.
TYPES = {"pid": int, "start_ticks": int, "started_at": float}


def load(path, kind=Process):
    """The record at `path` as `kind` (a namedtuple: pid and start_ticks
    first), or None. Says nothing about whether the process runs."""
    raw = read_trusted(path)
    if raw is None:
        return None
    try:
        data = keyvalue.parse(raw)
        # A key this berth does not know (a newer one's) is left out, never
        # an error: a daemon started before an up- or downgrade must still be
        # recognised, never killed as a stranger.
        return kind(**{k: TYPES.get(k, str)(data[k]) for k in kind._fields if k in data})
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError):
        return None


def save(path, rec):
    atomic_write(path, keyvalue.render(rec._asdict()), mode=0o600)


def ours(rec, mark=""):
    """The recorded process still runs: same pid and start time, not a
    zombie, and `mark` (if given) on its command line."""
    if rec is None or not proc.alive(rec.pid, rec.start_ticks):
        return False
    return not mark or mark in proc.cmdline(rec.pid)


# --- a user's dockerd -----------------------------------------------------------

def read(upaths):
    """The recorded daemon, or None. Says nothing about whether it runs."""
    return load(upaths.record, DaemonRecord)


def write(upaths, rec):
    save(upaths.record, rec)


def is_ours(upaths, rec):
    """The recorded pid is still the dockerd berth started for this user:
    same start time, not a zombie, and our daemon.json on its command line."""
    return ours(rec, upaths.daemon_json)


def running(upaths):
    rec = read(upaths)
    return rec if is_ours(upaths, rec) else None
