"""`berth down` and `berth down --purge` for one user.

down: the proxy stops serving the user, dockerd stops, what it left
mounted is unmounted, its rules, bridge and cgroups go; the data-root and
the lease stay. purge: down, then the data-root, the run dir, the mapping
account and the lease go too, all under the user's lock.
"""

import contextlib
import glob
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

from berth.core import paths, users
from berth.core.errors import BerthError, UserRefused, need_root
from berth.core.fsutil import remove
from berth.core.locks import user_lock
from berth.daemon import cgroups, containerd, hostns, supervisor, userns
from berth.lifecycle import hostobjects
from berth.net import bridge
from berth.proxy import control

log = logging.getLogger(__name__)

ROOT_FOR = "it makes bridges, firewall rules and daemons"


@dataclass(frozen=True)
class DownResult:
    user: str
    was_running: bool
    rules_removed: int
    bridge_removed: bool


def account_for_down(cfg, name):
    """down works for a user who has since been deleted: the lease knows the uid."""
    try:
        return users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    except UserRefused:
        lease = hostobjects.lease_table(cfg).get(users.check_name(name))
        if lease is None:
            raise
        return users.Account(name, lease.uid, 0, "")


def down(cfg, name, locked=False):
    """Stop the user's daemon, remove bridge and rules; data and lease stay.

    `locked`: the caller already holds the user's lock (the reaper and
    purge do).
    """
    account = account_for_down(cfg, name)
    need_root("down", ROOT_FOR)
    upaths = paths.for_user(cfg, account.name)
    br = paths.bridge_name(cfg, account.uid)
    with contextlib.nullcontext() if locked else user_lock(cfg, account.name):
        sup = hostobjects.supervisor_for(cfg, upaths)
        was_running = sup.running() is not None
        drop_from_proxy(cfg, upaths)
        sup.stop()
        # dockerd leaves mounts under its exec-root behind (a --net=host
        # container's netns bind mount among them); none may outlive it.
        _unmount_below(upaths.run_dir)
        _unmount_in_berths_namespace(cfg, upaths)

        removed = hostobjects.firewall(cfg).remove_user(account.name)
        bridge_removed = bridge.remove_bridge(br)
        remove_share(cfg, account.name)
    log.info("%s is down (dockerd %s, %d rule(s) and %s removed; data and lease kept)",
             account.name, "stopped" if was_running else "was not running", removed,
             f"bridge {br}" if bridge_removed else "no bridge")
    return DownResult(account.name, was_running, removed, bridge_removed)


def drop_from_proxy(cfg, upaths):
    """The proxy stops serving the user, and forgets them after a restart."""
    remove(upaths.proxy_spec)
    try:
        control.ask(cfg.paths.run_dir, "drop", upaths.user)
    except OSError:
        pass  # no proxy runs: nothing serves the socket, which goes below
    remove(upaths.socket)


def remove_share(cfg, name):
    """The user's cgroup (or slice) goes with their daemon, and so does the
    cgroup the daemon ran in (after its rules: none names a cgroup made again)."""
    if cgroups.cgroupfs_driver(cfg.daemon_json, supervisor.systemd_booted()):
        cgroups.remove(name)
    else:
        cgroups.remove_slice(name)
    cgroups.remove_daemon_cgroup(name)


def _unmount_in_berths_namespace(cfg, upaths):
    """What dockerd left mounted below its run dir where it ran (berth's
    mount namespace), but the pins: a container may start again."""
    ns = hostns.berth_namespace_path(cfg.paths.run_dir)
    if not hostns.is_mount_namespace(ns):
        return
    listing = subprocess.run(hostns.enter(["cat", "/proc/self/mounts"], ns), capture_output=True, text=True)
    pins = os.path.join(upaths.run_dir, "pins")
    prefix = upaths.run_dir.rstrip("/") + "/"
    points = [line.split()[1] for line in listing.stdout.splitlines()
              if line.split()[1].startswith(prefix) and not (line.split()[1] + "/").startswith(pins + "/")]
    for point in sorted(points, key=len, reverse=True):
        r = subprocess.run(hostns.enter(["umount", "--lazy", point], ns), capture_output=True, text=True)
        if r.returncode != 0:
            log.warning("cannot unmount %s in berth's namespace: %s", point, r.stderr.strip())


def _unmount_below(path, mounts="/proc/self/mounts"):
    """Unmount everything at or below `path`, deepest first."""
    with open(mounts) as f:
        points = [line.split()[1] for line in f]
    prefix = path.rstrip("/") + "/"
    for point in sorted((p for p in points if p == path or p.startswith(prefix)), key=len, reverse=True):
        r = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True)
        if r.returncode != 0:
            raise BerthError(f"cannot unmount {point}: {r.stderr.strip()}",
                             hint=f"unmount it by hand: umount {point}")


def _unpin(cfg, upaths):
    """The pins of the user's bind sources, unmounted where dockerd saw them
    (down unmounted those in this namespace), before their directory goes."""
    ns = hostns.berth_namespace_path(cfg.paths.run_dir)
    if hostns.is_mount_namespace(ns):
        from berth.proxy import pins
        try:
            pins.unpin_all(os.path.join(upaths.run_dir, "pins"), ns)
        except OSError as e:
            log.warning("%s's pins were not unmounted: %s", upaths.user, e)


def purge(cfg, name):
    """down, then delete the user's data-root and run dir and release their lease.

    The only way berth ever deletes a user's images, volumes and containers.
    The user's lock is held from the stop to the last deletion, so a login
    in between waits and then starts afresh, never on a half-deleted root.
    """
    account = account_for_down(cfg, name)
    need_root("down --purge", ROOT_FOR)
    upaths = paths.for_user(cfg, account.name)
    user_state = os.path.dirname(upaths.data_root)
    with user_lock(cfg, account.name):
        down(cfg, account.name, locked=True)
        # dockerd leaves its networks' bridges behind; their data goes now,
        # and the block's next user must not find them.
        for link in bridge.network_bridges(paths.bridge_name(cfg, account.uid)):
            bridge.remove_bridge(link)
        _unmount_below(user_state)
        try:
            if os.path.exists(user_state):
                shutil.rmtree(user_state)
        except OSError as e:
            raise BerthError(f"cannot delete {user_state}: {e.strerror} ({e.filename}); the lease is kept",
                             hint=f"see what holds it (fuser -vm {user_state}), then purge again") from e
        _unpin(cfg, upaths)
        shutil.rmtree(upaths.run_dir, ignore_errors=True)
        for beside in glob.glob(glob.escape(upaths.run_dir) + ".[0-9]*.[0-9]*"):
            shutil.rmtree(beside, ignore_errors=True)  # dockerd's remapped bundle dirs (see hostobjects.known_users)
        shared = hostobjects.shared_containerd(cfg)
        if shared is not None:
            shared.remove_namespaces(containerd.namespaces(account.name, account.uid))
        userns.remove(account.uid, account.name)
        released = hostobjects.lease_table(cfg).release(account.name)
    log.info("purged %s: deleted %s%s", account.name, user_state, ", released the lease" if released else "")
    return released
