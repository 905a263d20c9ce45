"""Hardened mode's mapping accounts on the host: made, checked, removed.

The plan is subids.py's; this runs shadow's own tools (useradd, usermod,
userdel), which lock and rewrite /etc/passwd, /etc/group, /etc/subuid and
/etc/subgid the way every other tool on the host expects. Only the lines
of berth's accounts are ever changed. Allocations are serialized by a lock
of berth's own, so two first logins never pick the same range.
"""

import grp
import logging
import os
import pwd
import subprocess

from . import paths, subids
from .errors import BerthError
from .locks import flock, locks_dir

log = logging.getLogger(__name__)

SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
NOLOGIN = "/usr/sbin/nologin"


class MappingError(BerthError):
    hint = "see berth doctor; the user's own /etc/subuid and /etc/subgid lines are never changed"


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True, env={"PATH": paths.SYSTEM_PATH, "LANG": "C.UTF-8"})
    if r.returncode != 0:
        raise MappingError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.returncode}")
    return r


def _account_uid(name):
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def ids_in_use():
    return {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}


def ensure(cfg, account):
    """The mapping account for `account` (a users.Account), made if missing
    or repaired if its lines are not exactly berth's; returns its name and base.

    Raises:
        MappingError: shadow's tools failed, no range is free, or lines keyed
            by the account's numeric uid (which dockerd would prefer) exist.
    """
    name = subids.account_name(account.uid)
    found = _current(name, account)
    if found is not None:
        return name, found
    with flock(os.path.join(locks_dir(cfg), "subids.lock"), cfg.daemon.lock_timeout, "subordinate ids"):
        found = _current(name, account)
        if found is not None:
            return name, found
        return name, _make(cfg, name, account)


def _current(name, account):
    uid = _account_uid(name)
    if uid is None:
        return None
    return subids.current_base(subids.parse(_read(SUBUID)), subids.parse(_read(SUBGID)), name,
                               account.uid, account.gid, uid)


def _make(cfg, name, account):
    uid = _account_uid(name)
    if uid is None:
        _run("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", NOLOGIN,
             "--user-group", "--comment", f"berth, container ids of {account.name}", name)
        uid = _account_uid(name)
    subuid, subgid = subids.parse(_read(SUBUID)), subids.parse(_read(SUBGID))
    stray = [e for e in (*subuid, *subgid) if e.owner == str(uid)]
    if stray:
        raise MappingError(f"/etc/subuid or /etc/subgid has lines keyed by uid {uid}, the uid of {name}; "
                           f"dockerd would take them over berth's",
                           hint=f"remove the lines starting with {uid}: from /etc/subuid and /etc/subgid")
    # Whatever lines the account has (a half-made earlier try, a changed
    # primary gid) go first; its range is kept if still free, so the files
    # of its remapped store keep their owners.
    previous = [e.start for e in subids.lines_of(subuid, name) if e.count == subids.RANGE]
    for e in subids.lines_of(subuid, name):
        _run("usermod", "--del-subuids", f"{e.start}-{e.start + e.count - 1}", name)
    for e in subids.lines_of(subgid, name):
        _run("usermod", "--del-subgids", f"{e.start}-{e.start + e.count - 1}", name)
    subuid, subgid = subids.parse(_read(SUBUID)), subids.parse(_read(SUBGID))
    base = None
    if previous:
        base = subids.choose_base(subuid, subgid, ids_in_use(), previous[0], limit=previous[0] + subids.RANGE)
    if base is None:
        base = subids.choose_base(subuid, subgid, ids_in_use(), cfg.security.subid_start)
    if base is None:
        raise MappingError(f"no free range of {subids.RANGE} subordinate ids at or above "
                           f"{cfg.security.subid_start}", hint="lower [security].subid_start")
    # In this order: dockerd maps container root to the first line.
    _run("usermod", "--add-subuids", f"{account.uid}-{account.uid}", "--add-subgids",
         f"{account.gid}-{account.gid}", name)
    _run("usermod", "--add-subuids", f"{base}-{base + subids.RANGE - 1}", "--add-subgids",
         f"{base}-{base + subids.RANGE - 1}", name)
    log.info("made %s: container root is %s (%d:%d), container ids 1.. are %d..", name, account.name,
             account.uid, account.gid, base)
    return base


def remove(uid):
    """Delete the mapping account of the user with `uid` (its lines go with
    it); True if there was one."""
    name = subids.account_name(uid)
    if _account_uid(name) is None:
        return False
    _run("userdel", name)
    log.info("removed %s", name)
    return True
