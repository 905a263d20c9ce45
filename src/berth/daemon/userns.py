"""Hardened mode's mapping accounts on the host: made, checked, removed.

The plan is subids.py's; this runs shadow's own tools (useradd, usermod,
userdel), which lock and rewrite /etc/passwd, /etc/group, /etc/subuid and
/etc/subgid the way every other tool on the host expects. Only the lines
of berth's own accounts are ever changed, and an account is berth's only
when it is exactly as berth makes it (system uid, nologin, no home, and a
comment naming the user it maps). Allocations are serialized host-wide.
"""

import grp
import logging
import os
import pwd
import re
import subprocess

from berth.core import paths
from berth.core.errors import BerthError
from berth.core.fsutil import read_text
from berth.core.locks import flock
from berth.daemon import subids

log = logging.getLogger(__name__)

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
NOLOGIN = "/usr/sbin/nologin"
NO_HOME = "/nonexistent"
# Host-wide, whatever [paths] a config names: /etc/subuid is one file.
# In /run, where only root creates files (not /run/lock, which anyone may).
LOCK = "/run/berth-subids.lock"
STORE = re.compile(r"[0-9]+\.[0-9]+")  # a remapped store in a data-root: <uid>.<gid>


class MappingError(BerthError):
    hint = "see berth doctor; the user's own /etc/subuid and /etc/subgid lines are never changed"


def comment(user):
    return f"berth, container ids of {user}"


def _run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, env={"PATH": paths.SYSTEM_PATH, "LANG": "C.UTF-8"})
    if r.returncode != 0:
        raise MappingError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.returncode}")
    return r


def _ours(name, user):
    """The passwd entry of mapping account `name` if it is berth's, for `user`;
    None if there is no such account.

    Raises:
        MappingError: an account of that name exists but is not berth's for
            `user` (a person named berth-1002, or the account of a deleted
            user whose uid was given to someone new).
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    if (entry.pw_shell, entry.pw_dir, entry.pw_gecos) != (NOLOGIN, NO_HOME, comment(user)):
        raise MappingError(f"the account {name} is not berth's mapping account for {user} "
                           f"(comment {entry.pw_gecos!r}, home {entry.pw_dir}, shell {entry.pw_shell})",
                           hint=f"if it maps a user who is gone, berth down --purge that user; "
                                f"otherwise rename the account {name}")
    return entry


def ids_in_use():
    return {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}


def ensure(cfg, account):
    """The mapping account for `account` (a users.Account), made if missing
    or repaired if its lines are not exactly berth's; returns (name, base).

    Container gid 0 is the mapping account's own group, never one of the
    user's: dockerd makes the image store passable to that group, and a
    user inside it could open the device nodes an image's layers hold
    (they are extracted as root, owned by container root: the user).

    Raises:
        MappingError: shadow's tools failed, no range is free, the account
            name is taken by something not berth's, or lines keyed by the
            account's numeric uid (which dockerd would prefer) exist.
    """
    name = subids.account_name(account.uid)
    found = _current(name, account)
    if found is not None:
        return name, found
    with flock(LOCK, cfg.daemon.lock_timeout, "subordinate ids"):
        found = _current(name, account)
        if found is not None:
            return name, found
        return name, _make(cfg, name, account)


def current(account):
    """The base of `account`'s mapping if it is in place exactly as berth
    makes it, else None (ensure would make or repair it)."""
    return _current(subids.account_name(account.uid), account)


def _root_gid(entry, account):
    return entry.pw_gid


def store_name(account):
    """The remapped store dockerd makes in the data-root: <root uid>.<root gid>."""
    return f"{account.uid}.{pwd.getpwnam(subids.account_name(account.uid)).pw_gid}"


def close_other_stores(data_root, keep):
    """An upgrade guard: stores of an earlier mapping (one that gave a
    user's private group container gid 0) keep their images on disk, and their device
    nodes: nobody but root may pass into them any more."""
    try:
        names = os.listdir(data_root)
    except FileNotFoundError:
        return []
    closed = []
    for name in names:
        path = os.path.join(data_root, name)
        if name != keep and STORE.fullmatch(name) and os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)
            closed.append(path)
            log.warning("closed %s, a remapped store of an earlier mapping, to everyone but root", path)
    return closed


def _current(name, account):
    entry = _ours(name, account.name)
    if entry is None:
        return None
    return subids.current_base(subids.parse(read_text(SUBUID)), subids.parse(read_text(SUBGID)), name,
                               account.uid, _root_gid(entry, account), entry.pw_uid)


def _make(cfg, name, account):
    entry = _ours(name, account.name)
    if entry is None:
        _run("useradd", "--system", "--no-create-home", "--home-dir", NO_HOME, "--shell", NOLOGIN,
             "--user-group", "--comment", comment(account.name), name)
        entry = _ours(name, account.name)
    gid = _root_gid(entry, account)
    subuid, subgid = subids.parse(read_text(SUBUID)), subids.parse(read_text(SUBGID))
    stray = [e for e in (*subuid, *subgid) if e.owner == str(entry.pw_uid)]
    if stray:
        raise MappingError(f"/etc/subuid or /etc/subgid has lines keyed by uid {entry.pw_uid}, the uid of {name}; "
                           f"dockerd would take them over berth's",
                           hint=f"remove the lines starting with {entry.pw_uid}: from /etc/subuid and /etc/subgid")
    # Whatever lines the account has (a half-made earlier try, a changed
    # primary gid) go first; its range is kept if still free, so the files
    # of its remapped store keep their owners.
    previous = [e.start for e in subids.lines_of(subuid, name) if e.count == subids.RANGE]
    for e in subids.lines_of(subuid, name):
        _run("usermod", "--del-subuids", f"{e.start}-{e.start + e.count - 1}", name)
    for e in subids.lines_of(subgid, name):
        _run("usermod", "--del-subgids", f"{e.start}-{e.start + e.count - 1}", name)
    subuid, subgid = subids.parse(read_text(SUBUID)), subids.parse(read_text(SUBGID))
    base = None
    if previous:
        base = subids.choose_base(subuid, subgid, ids_in_use(), previous[0], limit=previous[0] + subids.RANGE)
        if base is None:
            log.warning("the range of %s at %d is taken now; files in %s's image store will not map back",
                        name, previous[0], account.name)
    if base is None:
        base = subids.choose_base(subuid, subgid, ids_in_use(), cfg.security.subid_start)
    if base is None:
        raise MappingError(f"no free range of {subids.RANGE} subordinate ids at or above "
                           f"{cfg.security.subid_start}", hint="lower [security].subid_start")
    # In this order: dockerd maps container root to the first line.
    _run("usermod", "--add-subuids", f"{account.uid}-{account.uid}", "--add-subgids", f"{gid}-{gid}", name)
    _run("usermod", "--add-subuids", f"{base}-{base + subids.RANGE - 1}", "--add-subgids",
         f"{base}-{base + subids.RANGE - 1}", name)
    log.info("made %s: container root is %s (%d:%d), container ids 1.. are %d..", name, account.name,
             account.uid, gid, base)
    return base


def remove(uid, user):
    """Delete the mapping account of `user` (uid `uid`) with its lines; True
    if there was one. An account of that name that is not berth's for
    `user` is left alone (MappingError)."""
    name = subids.account_name(uid)
    if _ours(name, user) is None:
        return False
    _run("userdel", name)
    log.info("removed %s", name)
    return True
