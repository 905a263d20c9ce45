"""Subordinate ids for hardened mode: who maps to what. Pure: file texts and
the ids in use in, plain data out.

Each user's dockerd runs with `userns-remap` naming a dedicated system
account, `berth-<uid>`, whose lines in /etc/subuid (and /etc/subgid) are, in
this order:

    berth-1001:1001:1            container uid 0 is the user's own uid
    berth-1001:<base>:65536      container uids 1..65535: a range of berth's

(in /etc/subgid the first line is the user's primary gid when that group is
theirs alone, else the mapping account's own group's)

dockerd (20.10 and later) takes an account's lines in file order, so the
map is `0 1001 1 / 1 <base> 65536`. The user's own lines (their rootless
podman's) are never touched; berth's ranges overlap no other range and no
uid or gid in use.
"""

from collections import namedtuple

RANGE = 65536  # container ids 1..65535, and one to spare as useradd gives

SubId = namedtuple("SubId", "owner start count")
Mapping = namedtuple("Mapping", "account uid_lines gid_lines")


def account_name(uid):
    """The mapping account of the user with `uid` (a uid fits any name rule)."""
    return f"berth-{uid}"


def parse(text):
    """The lines of /etc/subuid or /etc/subgid (owner:start:count), in order."""
    out = []
    for line in (text or "").splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.append(SubId(parts[0], int(parts[1]), int(parts[2])))
    return out


def wanted(account, uid, gid, base):
    """The lines `account` must have, in order, for a user with uid/gid."""
    return Mapping(account, [SubId(account, uid, 1), SubId(account, base, RANGE)],
                   [SubId(account, gid, 1), SubId(account, base, RANGE)])


def lines_of(entries, account, account_uid=None):
    """The lines dockerd would take for `account`: by name, or by its uid."""
    keys = {account} | ({str(account_uid)} if account_uid is not None else set())
    return [e for e in entries if e.owner in keys]


def current_base(subuid, subgid, account, uid, gid, account_uid=None):
    """The base of the account's range when its lines are exactly as wanted, else None."""
    have_u, have_g = lines_of(subuid, account, account_uid), lines_of(subgid, account, account_uid)
    if len(have_u) != 2:
        return None
    want = wanted(account, uid, gid, have_u[1].start)
    return want.uid_lines[1].start if (have_u, have_g) == (want.uid_lines, want.gid_lines) else None


def choose_base(subuid, subgid, ids_in_use, start, limit=2**32 - 1):
    """The lowest base start + k * RANGE whose range overlaps
    no line of either file and no uid or gid in use; None if there is none."""
    taken = sorted((e.start, e.start + e.count) for e in (*subuid, *subgid))
    used = sorted(i for i in ids_in_use if i >= start)
    base = start
    while base + RANGE <= limit:
        end = base + RANGE
        clash = next((b for a, b in taken if a < end and base < b), None)
        if clash is None:
            clash = next((i + 1 for i in used if base <= i < end), None)
        if clash is None:
            return base
        base = start + -(-(clash - start) // RANGE) * RANGE  # the next base past the clash, in steps from start
    return None
