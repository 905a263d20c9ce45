"""`up` and `down` for one user: the steps in order, each idempotent.

up:   the shared containerd (started where it does not run) -> lease ->
      bridge -> dockerd (forked, on containerd once it answers) -> policy
      proxy (hardened mode, started where none answers) -> rules (while
      both start) -> dockerd answers -> the user's socket (the proxy's, or
      dockerd's handed over) -> net container.
A cold `up` that fails part-way undoes what it made, last first, so no
bridge, rule or process is left behind; the lease stays (it is the user's
for good). A warm `up` only repairs what is missing (e.g. rules wiped by a
firewall reload) and never undoes what was already there.
"""

import contextlib
import glob
import ipaddress
import logging
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass

from berth.core import limits, locks, paths, record, users
from berth.core.errors import BerthError, DaemonError, UserRefused
from berth.core.fsutil import atomic_write, ensure_dir, ensure_private_file, read_trusted, remove, traverse_only_for
from berth.core.locks import user_lock
from berth.core.paths import ROOT_ONLY, TRAVERSE_ONLY
from berth.daemon import cgroups, containerd, daemonjson, engine, hostns, subids, userns
from berth.daemon import supervisor as supervisor_mod
from berth.daemon.supervisor import find_dockerd

# What comes after dockerd is launched (the proxy's spec, the firewall plan,
# the net container) is imported there, while dockerd boots.
from berth.lifecycle import activity, startdecision
from berth.lifecycle import hostobjects as host
from berth.net import blocks, bridge, trespass
from berth.proxy import control as proxyctl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpResult:
    user: str
    block: str
    bridge: str
    pid: int
    net_ip: str
    docker_host: str
    started: bool      # False: the daemon was already up
    seconds: float
    mode: str = "hardened"  # what the daemon runs in (a config change waits for its restart)


@dataclass(frozen=True)
class DownResult:
    user: str
    was_running: bool
    rules_removed: int
    bridge_removed: bool


def _prepare_dirs(cfg, upaths, account):
    """berth's directories, each as open as it must be and no more."""
    ensure_dir(cfg.paths.state_dir, TRAVERSE_ONLY)
    ensure_private_file(os.path.join(cfg.paths.state_dir, "leases.json"))  # 0644 under older berths
    ensure_dir(os.path.dirname(os.path.dirname(upaths.data_root)), TRAVERSE_ONLY)
    # dockerd refuses a remapped root whose parents lack o+x (it checks the
    # mode bits, not access): 0711, and dockerd makes the data-root 0710.
    os.chmod(ensure_dir(os.path.dirname(upaths.data_root), TRAVERSE_ONLY), TRAVERSE_ONLY)
    if cfg.security.mode == "hardened":
        _check_passable(os.path.dirname(upaths.data_root))
    ensure_dir(cfg.paths.run_dir, TRAVERSE_ONLY)
    # The user (only) passes through to the socket inside; nothing in it is theirs to write.
    ensure_dir(upaths.run_dir, TRAVERSE_ONLY)
    ensure_dir(upaths.engine_dir, ROOT_ONLY)  # dockerd's own socket: root's alone
    if not traverse_only_for(upaths.run_dir, account.uid):
        log.warning("%s has no POSIX ACLs: %s is 0711, so others can stat (not list) what is in it",
                    cfg.paths.run_dir, upaths.run_dir)
    ensure_dir(cfg.paths.log_dir, ROOT_ONLY)
    if len(upaths.exec_root) + len("/containerd/containerd-debug.sock") > paths.MAX_SOCKET_PATH:
        raise DaemonError(f"the exec-root {upaths.exec_root} is too long for containerd's sockets",
                          hint="choose a shorter [paths].run_dir")


def _check_passable(path):
    """Every directory from `path` up must be o+x, or dockerd refuses the remapped root."""
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            raise DaemonError(f"{path} is not passable by others (o+x), and in hardened mode dockerd needs "
                              f"every directory above a user's data-root to be",
                              hint=f"chmod o+x {path}, or choose another [paths].state_dir")
        if path == "/":
            return
        path = os.path.dirname(path)


def _enable_ip_forward(proc_sys="/proc/sys/net/ipv4/ip_forward"):
    # NAT for the containers needs routing; dockerd turns it on too.
    with open(proc_sys) as f:
        if f.read().strip() == "1":
            return
    with open(proc_sys, "w") as f:
        f.write("1")
    log.info("enabled net.ipv4.ip_forward")


def _hand_socket(upaths, account):
    """Trusted mode: only the user (and root) may talk to their daemon: user:root 0600.

    dockerd made it root:root 0660 ("group": "root"), so nobody else had a
    window; a shared primary group such as 'users' gets nothing either.
    """
    os.chown(upaths.socket, account.uid, 0)
    os.chmod(upaths.socket, 0o600)


def _serve_through_proxy(cfg, upaths, account, layout, proxy):
    """Hardened mode: the proxy serves the user's socket (user:root 0600)
    in front of dockerd's own, from the spec written here."""
    from berth.proxy import spec as proxyspec

    atomic_write(upaths.proxy_spec, proxyspec.render(proxyspec.for_user(cfg, account, layout)), mode=0o600)
    proxy.wait_ready()
    proxyctl.ask(cfg.paths.run_dir, "serve", account.name)


def _need_root(command):
    if os.geteuid() != 0:
        raise BerthError(f"'berth {command}' needs root: it makes bridges, firewall rules and daemons",
                         hint=f"run it with sudo (sudo berth {command} ...)")


def up(cfg, name, clock=time.monotonic, prelaunched=None, launch_key=None):
    """Bring the user up (idempotent); see the module's docstring.

    `prelaunched`: the dockerd prelaunch.launch started before the config
    was read (with the user's lock held), taken over if it is what this
    start would run, else stopped and started again. `launch_key`: the
    config file's identity when it was read (logindigest.identity); given,
    a cold start leaves the plan the next prelaunch launches from.

    Raises:
        UserRefused: not a user berth serves.
        BerthError: what failed (MissingBinary, NetworkError, DaemonError,
            SubnetsExhausted, LockTimeout, ...), after undoing a cold start.
    """
    try:
        return _up(cfg, name, clock, prelaunched, launch_key)
    except BaseException:
        if prelaunched is not None:
            _abandon(prelaunched)  # failed before its lock was taken over, or after (then a no-op)
        raise


def _up(cfg, name, clock, prelaunched, launch_key):
    t0 = clock()
    account = users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    dockerd = find_dockerd(cfg.daemon.dockerd)
    _need_root("up")
    upaths = paths.for_user(cfg, account.name)
    br = paths.bridge_name(cfg, account.uid)
    if prelaunched is not None and startdecision.launched_elsewhere(
            prelaunched.plan, upaths.run_dir, locks.user_lock_path(cfg, account.name), launch_key):
        # The config read is not the one the plan named (changed in between):
        # what was launched goes now, and this up takes the config's own lock.
        log.info("the config changed while %s's dockerd was launched from its plan; starting it again", name)
        _abandon(prelaunched)
        prelaunched = None

    with prelaunched if prelaunched is not None else user_lock(cfg, account.name):
        with contextlib.ExitStack() as undo:
            if prelaunched is not None:
                # Whatever fails before it is taken over: it goes (last, under the lock).
                undo.callback(_abandon, prelaunched)
            # Under the lock: a purge holds it until the last file is gone.
            _prepare_dirs(cfg, upaths, account)
            supervisor = host.supervisor_for(cfg, upaths, dockerd, br)
            shared, relaunched = _launch_containerd(cfg, supervisor.running())  # it boots while the bridge is made
            lease = host.lease_table(cfg).acquire(account.name, account.uid, cfg.network.pool,
                                                  cfg.network.block_prefix, lambda: _networks_to_avoid(cfg))
            clear_trespassers(cfg, {account.name: str(lease.block)}, own_bridge=br)
            layout = blocks.layout(lease.block)
            if bridge.ensure_bridge(br, layout.bridge_cidr, account.name):
                undo.callback(bridge.remove_bridge, br)
            rec = supervisor.running()
            address = shared.wait_ready() if shared is not None else ""
            # Before dockerd starts its containers, and again for one that runs: a config's new limits apply.
            cgroupfs = cgroups.cgroupfs_driver(cfg.daemon_json, supervisor_mod.systemd_booted())
            share = limits.for_user(cfg.limits.defaults, cfg.limits.users, account.name)
            if cgroupfs:
                cgroups.apply(account.name, share)
            else:  # systemd's driver: the user's slice
                cgroups.apply_slice(account.name, share)
            hardened = cfg.security.mode == "hardened"
            is_prelaunched = prelaunched is not None and rec is not None and rec.pid == prelaunched.rec.pid

            def wanted():
                """daemon.json and the launch plan of this start."""
                remap = subids.account_name(account.uid) if hardened else None  # the name userns.ensure makes
                given = (address, *containerd.namespaces(account.name, account.uid)) if address else None
                doc = daemonjson.dumps(daemonjson.render(cfg, upaths, layout, br, remap, given,
                                                         cgroups.parent_of(account.name, cgroupfs)))
                return doc, _launch_plan(cfg, upaths, account, supervisor, layout, address, shared, launch_key,
                                         cgroups.file_writes(account.name, share) if cgroupfs else [])

            doc = plan = None
            if is_prelaunched:
                doc, plan = wanted()
            start = startdecision.decide(startdecision.Found(
                account.name, rec is not None, own_socket=not serves_the_users_socket_itself(upaths),
                mode=rec.mode if rec is not None else cfg.security.mode, wanted_mode=cfg.security.mode,
                prelaunched=prelaunched is not None, is_prelaunched=is_prelaunched,
                # A mapping made only now: the dockerd launched before it found none.
                as_planned=is_prelaunched and (not hardened or userns.current(account) is not None)
                and plan == prelaunched.plan and read_trusted(upaths.daemon_json) == doc.encode()))
            if start.reason and start.action != startdecision.ADOPT:
                (log.warning if start.warn else log.info)("%s", start.reason)
            started, adopt = start.starts, start.action == startdecision.ADOPT
            if start.action == startdecision.RESTART:
                supervisor.stop()
            if started:
                undo.callback(_remove_share, cfg, account.name)
                if hardened:
                    userns.ensure(cfg, account)
                    userns.close_other_stores(upaths.data_root, userns.store_name(account))
                if plan is None:
                    doc, plan = wanted()
                if start.action == startdecision.REPLACE:
                    _replace_prelaunched(supervisor, prelaunched, br, layout, account.name, undo)
                if adopt:
                    log.info("started dockerd for %s: pid %d (%s, %s)", account.name, rec.pid, supervisor.kind,
                             start.reason)
                else:
                    atomic_write(upaths.daemon_json, doc, mode=0o600)
                    if hardened:
                        _pin_again(cfg, upaths, account, shared, address)
                    rec = _start_dockerd(supervisor, shared, address)
                    if launch_key is not None:
                        _leave_plan(upaths, plan)  # (one launched from is this very plan)
                undo.callback(supervisor.stop)
            proxy = host.proxy_supervisor(cfg) if rec.mode == "hardened" else None
            if proxy is not None:
                proxy.launch()  # where none answers; it starts while dockerd does
                if started:
                    undo.callback(_drop_from_proxy, cfg, upaths)
            # dockerd takes a moment to start: the rules, and the imports of
            # iptc and the Docker SDK, are done meanwhile rather than before.
            _ensure_rules(cfg, account, lease.block, undo if started else None)
            if proxy is not None:
                # Also while dockerd boots: until it answers, so does the proxy, with an error.
                _serve_through_proxy(cfg, upaths, account, layout, proxy)
            try:
                supervisor.wait_ready(rec, cfg.daemon.start_timeout, lambda: engine.ping(upaths.engine_socket))
            except DaemonError as e:
                if not adopt:
                    raise
                # Launched from the plan, it may have met what `up` repaired since.
                log.warning("the dockerd launched for %s from its plan failed (%s); starting it again",
                            account.name, e.message)
                supervisor.stop(now=True)
                rec = _start_dockerd(supervisor, shared, address)
                supervisor.wait_ready(rec, cfg.daemon.start_timeout, lambda: engine.ping(upaths.engine_socket))
            if relaunched:
                # Every daemon that ran on the old one, this user's included.
                wait_reconnected(cfg, daemons_on_shared_containerd(cfg))
            if proxy is None:
                _hand_socket(upaths, account)
            if not engine.ping(upaths.socket):
                raise DaemonError(f"{upaths.socket} does not answer although dockerd does",
                                  hint="see proxy.log in " + str(cfg.paths.log_dir))
            net_ip = _ensure_net_container(cfg, upaths)
            if prelaunched is not None:
                prelaunched.done = True
            undo.pop_all()
        if started:
            activity.touch(upaths)  # a daemon just brought up is not idle

    result = UpResult(account.name, str(lease.block), br, rec.pid, net_ip,
                      upaths.docker_host, started, clock() - t0, rec.mode)
    log.info("%s is up (block %s, dockerd pid %d, %s in %.2f s)", result.user, result.block, result.pid,
             "started" if started else "already running", result.seconds)
    return result


def _pin_again(cfg, upaths, account, shared, address):
    """Before dockerd starts, and restarts the containers whose policy says
    so: their bind sources pinned again, as the user's rights stand now
    (after a reboot /run holds no pin). No container runs meanwhile. A
    source the user no longer reaches is left unpinned: that container
    fails to start, as dockerd fails one whose source is gone."""
    from berth.proxy import pins
    from berth.proxy import spec as proxyspec

    store = pins.Store(account.uid, proxyspec.pins_records(cfg, account.name), os.path.join(upaths.run_dir, "pins"))
    tokens = [t for t in store.tokens() if store.user_path(t) is not None]
    if not tokens:
        return
    ns = shared.mount_namespace() if address else hostns.HOST
    fd = ns if isinstance(ns, int) else os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        results = store.pin([(store.user_path(t), False) for t in tokens], tokens, fd)
    except OSError as e:
        log.warning("%s's bind sources were not pinned again: %s", account.name, e)
        return
    finally:
        os.close(fd)
    lost = [r.path for r in results if r.error]
    if lost:
        log.warning("%s no longer reaches %d bind source(s) of their containers (%s): those will not start",
                    account.name, len(lost), ", ".join(lost[:3]))


def _start_dockerd(supervisor, shared, address):
    """dockerd launched the usual way, in the shared containerd's mount namespace."""
    ns = shared.mount_namespace() if address else hostns.HOST
    try:
        return supervisor.start(address, ns)
    finally:
        if isinstance(ns, int):
            os.close(ns)


def _abandon(prelaunched):
    if not prelaunched.done:
        from berth.lifecycle import prelaunch

        prelaunch.abandon(prelaunched)


def _launch_plan(cfg, upaths, account, supervisor, layout, address, shared, identity, cgroup_writes):
    """What this start runs, as the next prelaunch would launch it (see prelaunch.py)."""
    from berth import __version__

    return {"version": __version__, "identity": identity or "", "user": account.name, "uid": str(account.uid),
            "run_dir": upaths.run_dir, "supervisor": supervisor.kind, "dockerd": supervisor.dockerd,
            "daemon_json": upaths.daemon_json, "log_file": upaths.log_file,
            "lock": locks.user_lock_path(cfg, account.name), "bridge": supervisor.bridge_name,
            "bridge_cidr": str(layout.bridge_cidr), "mode": cfg.security.mode, "containerd": address,
            # Where dockerd must run: in the mount namespace of berth's own containerd.
            "containerd_record": shared.record_path if address and not shared.external else "",
            # The user's limits, set before dockerd restarts their containers.
            "cgroup": ";".join(f"{path}={value}" for path, value in cgroup_writes),
            # Where dockerd is born: the firewall knows users' daemons by it.
            "daemon_cgroup": supervisor.cgroup}


def _replace_prelaunched(supervisor, prelaunched, br, layout, owner, undo):
    """Stop a dockerd launched from an outdated plan, and its bridge if the
    plan made it: the usual start follows."""
    supervisor.stop(now=True)
    if prelaunched.made_bridge:
        bridge.remove_bridge(prelaunched.plan["bridge"])
        if bridge.ensure_bridge(br, layout.bridge_cidr, owner):
            undo.callback(bridge.remove_bridge, br)


def _leave_plan(upaths, plan):
    """The next cold up launches from it; a plan not left costs only speed.
    Left as dockerd boots: a start that then fails leaves a plan the next
    `up` checks like any other."""
    from berth.lifecycle import prelaunch

    try:
        prelaunch.write(upaths, plan)
    except (OSError, BerthError, ValueError) as e:
        log.warning("could not leave %s's launch plan: %s", upaths.user, e)


def _remove_share(cfg, name):
    """The user's cgroup (or slice) goes with their daemon, and so does the
    cgroup the daemon ran in (after its rules: none names a cgroup made again)."""
    if cgroups.cgroupfs_driver(cfg.daemon_json, supervisor_mod.systemd_booted()):
        cgroups.remove(name)
    else:
        cgroups.remove_slice(name)
    cgroups.remove_daemon_cgroup(name)


def _launch_containerd(cfg, running):
    """(the shared containerd, whether it was started now), started where
    it does not run, for a daemon about to start or one that runs on it;
    (None, False) where dockerds run their own."""
    if running is not None and not running.containerd:
        return None, False  # a daemon with a containerd of its own (own, or an older berth) goes on with it
    shared = host.shared_containerd(cfg)
    return shared, shared is not None and shared.launch()


def daemons_on_shared_containerd(cfg, address=None):
    """The users whose running dockerd berth started on a shared containerd
    (on the one at `address`, if given)."""
    return [n for n in host.known_users(cfg, {})
            if (rec := record.running(paths.for_user(cfg, n))) is not None and rec.containerd
            and address in (None, rec.containerd)]


def wait_reconnected(cfg, names, timeout=10.0):
    """After the shared containerd came back: until the users' running
    dockerds reach it again (gRPC retries a lost connection with a backoff
    of up to 3 s; until then every start, stop or exec fails). A call that
    needs containerd answers 503 (unavailable) until then."""
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            try:
                status, _ = engine.request(paths.for_user(cfg, name).engine_socket,
                                           f"/containers/{cfg.net_container.name}/top", 5.0)
            except OSError:
                status = 0  # dockerd itself does not answer: not this wait's to report
            if status < 500:
                waiting.remove(name)
        if waiting:
            time.sleep(0.1)
    if waiting:
        log.warning("the dockerds of %s have not reached the shared containerd again within %g s",
                    ", ".join(waiting), timeout)


def serves_the_users_socket_itself(upaths):
    """An upgrade guard: a running dockerd with no socket of berth's own
    was started by a berth that gave the user dockerd's own socket, which
    in hardened mode is the way round the policy proxy: it is restarted."""
    return not os.path.exists(upaths.engine_socket)


def _networks_to_avoid(cfg):
    """The host's networks, less what users' daemons put in the pool: no
    user can make a new block unavailable to the next one."""
    owners = host.user_interfaces(cfg, host.lease_table(cfg).read())
    return trespass.host_networks(bridge.host_networks_by_link(), cfg.network.pool, owners)


def clear_trespassers(cfg, blocks_of, own_bridge=None):
    """Take off other users' interfaces any address in the blocks of
    `blocks_of` ({user: block}): a block is routed to its user alone.
    Returns what was removed. Users' daemons are asked which bridges are
    theirs only when some other interface holds such an address."""
    suspects = [(link, address) for link, address in bridge.addresses()
                if link != own_bridge and any(ipaddress.IPv4Interface(address).network.overlaps(
                    ipaddress.IPv4Network(block)) for block in blocks_of.values())]
    if not suspects:
        return []
    found = trespass.trespassers(suspects, blocks_of, host.user_interfaces(cfg, host.lease_table(cfg).read()))
    for link, address, owner, holder in found:
        bridge.remove_address(link, address)
        log.warning("removed %s from %s, a bridge of %s's daemon: it lies in %s's block", address, link, holder,
                    owner)
    return found


def _ensure_net_container(cfg, upaths):
    """The net container's IP, starting (or creating) it only if needed.

    dockerd restarts it by itself (restart policy "always"), so on most ups
    one GET over the socket suffices and the Docker SDK is never imported.
    """
    from berth.daemon import netcontainer

    name = cfg.net_container.name
    try:
        info = engine.get_json(upaths.engine_socket, f"/containers/{name}/json")
        if info.get("State", {}).get("Running"):
            return netcontainer.ip_from_inspect(info)
    except (OSError, ValueError):
        pass  # absent or unreadable: the SDK path below creates or reports it
    dc = netcontainer.client("unix://" + upaths.engine_socket)
    return netcontainer.ip_from_inspect(netcontainer.ensure(dc, name, cfg.net_container.image).attrs)


def _ensure_rules(cfg, account, block, undo):
    _enable_ip_forward()
    fw = host.firewall(cfg)
    host.ensure_user_rules(cfg, fw, account.name, block, account.uid)
    if undo is not None:
        undo.callback(fw.remove_user, account.name)


def _account_for_down(cfg, name):
    """down works for a user who has since been deleted: the lease knows the uid."""
    try:
        return users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    except UserRefused:
        lease = host.lease_table(cfg).get(users.check_name(name))
        if lease is None:
            raise
        return users.Account(name, lease.uid, 0, "")


def down(cfg, name, locked=False):
    """Stop the user's daemon, remove bridge and rules; data and lease stay.

    `locked`: the caller already holds the user's lock (the reaper and
    purge do).
    """
    account = _account_for_down(cfg, name)
    _need_root("down")
    upaths = paths.for_user(cfg, account.name)
    br = paths.bridge_name(cfg, account.uid)
    with contextlib.nullcontext() if locked else user_lock(cfg, account.name):
        supervisor = host.supervisor_for(cfg, upaths)
        was_running = supervisor.running() is not None
        _drop_from_proxy(cfg, upaths)
        supervisor.stop()
        # dockerd leaves mounts under its exec-root behind (a --net=host
        # container's netns bind mount among them); none may outlive it.
        _unmount_below(upaths.run_dir)
        _unmount_in_berths_namespace(cfg, upaths)

        removed = host.firewall(cfg).remove_user(account.name)
        bridge_removed = bridge.remove_bridge(br)
        _remove_share(cfg, account.name)
    log.info("%s is down (dockerd %s, %d rule(s) and %s removed; data and lease kept)",
             account.name, "stopped" if was_running else "was not running", removed,
             f"bridge {br}" if bridge_removed else "no bridge")
    return DownResult(account.name, was_running, removed, bridge_removed)


def _drop_from_proxy(cfg, upaths):
    """The proxy stops serving the user, and forgets them after a restart."""
    remove(upaths.proxy_spec)
    try:
        proxyctl.ask(cfg.paths.run_dir, "drop", upaths.user)
    except OSError:
        pass  # no proxy runs: nothing serves the socket, which goes below
    remove(upaths.socket)


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
    account = _account_for_down(cfg, name)
    _need_root("down --purge")
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
            shutil.rmtree(beside, ignore_errors=True)  # dockerd's remapped bundle dirs (see host.known_users)
        shared = host.shared_containerd(cfg)
        if shared is not None:
            shared.remove_namespaces(containerd.namespaces(account.name, account.uid))
        userns.remove(account.uid, account.name)
        released = host.lease_table(cfg).release(account.name)
    log.info("purged %s: deleted %s%s", account.name, user_state, ", released the lease" if released else "")
    return released
