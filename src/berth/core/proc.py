"""Processes as /proc shows them: identity by pid *and* start time.

A pidfile can name a pid the kernel has since given to another process
(moby#46988); berth only trusts or signals a pid whose start time and
command line match what it recorded.
"""

import os
from collections import namedtuple

# state: R, S, D, Z, ...; start_ticks: field 22, clock ticks since boot.
ProcStat = namedtuple("ProcStat", "pid state ppid start_ticks")


def parse_stat(text):
    """Parse /proc/<pid>/stat; the comm field may hold spaces and ')'."""
    head, _, rest = text.rpartition(")")
    pid = int(head.split("(", 1)[0])
    fields = rest.split()
    # fields[0] is field 3 (state); start time is field 22.
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), start_ticks=int(fields[19]))


def stat(pid, proc="/proc"):
    try:
        with open(f"{proc}/{pid}/stat") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def cmdline(pid, proc="/proc"):
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def alive(pid, start_ticks, proc="/proc"):
    """The same process still runs: same pid, same start time, not a zombie."""
    st = stat(pid, proc)
    return st is not None and st.start_ticks == start_ticks and st.state not in ("Z", "X")


def comm(pid, proc="/proc"):
    try:
        with open(f"{proc}/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def owner(pid, proc="/proc"):
    """The uid that owns the process, or None when it is gone."""
    try:
        return os.stat(f"{proc}/{pid}").st_uid
    except FileNotFoundError:
        return None


def rss_bytes(pid, proc="/proc"):
    try:
        with open(f"{proc}/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def pss_bytes(pid, proc="/proc"):
    """Proportional set size: the process's own pages, and its share of
    pages others map too (the dockerd binary every user's daemon runs).
    Summed over processes it counts each page once. Root only; RSS where
    smaps_rollup cannot be read."""
    try:
        with open(f"{proc}/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except PermissionError:
        return rss_bytes(pid, proc)
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0
    return rss_bytes(pid, proc)


def pids(proc="/proc"):
    return [int(d) for d in os.listdir(proc) if d.isdigit()]


def children_map(proc="/proc"):
    """ppid -> [pid] for every live process."""
    tree = {}
    for pid in pids(proc):
        st = stat(pid, proc)
        if st is not None:
            tree.setdefault(st.ppid, []).append(pid)
    return tree


def descendants(pid, tree):
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def boot_time(proc="/proc"):
    with open(f"{proc}/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    return 0


def started_at(st, proc="/proc"):
    """Wall-clock start of a process, in seconds since the epoch."""
    return boot_time(proc) + st.start_ticks / os.sysconf("SC_CLK_TCK")


def reap(pid):
    """Collect a child's exit status (it is ours when berth started it in this process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
