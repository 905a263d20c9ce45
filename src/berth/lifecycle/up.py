"""`berth up` for one user: the steps in order, each idempotent.

up:   the shared containerd (started where it does not run) -> lease ->
      bridge -> dockerd (forked, on containerd once it answers) -> policy
      proxy (hardened mode, started where none answers) -> rules (while
      both start) -> dockerd answers -> the user's socket (the proxy's, or
      dockerd's handed over) -> net container.
Which dockerd it ends with (the one that runs, one prelaunched before the
config was read, or a new one) is startdecision.decide's to say.
A cold `up` that fails part-way undoes what it made, last first, so no
bridge, rule or process is left behind; the lease stays (it is the user's
for good). A warm `up` only repairs what is missing (e.g. rules wiped by a
firewall reload) and never undoes what was already there.
"""

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from berth.core import limits, locks, paths, users
from berth.core.errors import BerthError, DaemonError, need_root
from berth.core.fsutil import atomic_write, read_trusted
from berth.core.locks import user_lock
from berth.daemon import cgroups, containerd, daemonjson, engine, hostns, subids, supervisor, userns

# What comes after dockerd is launched (the proxy's spec, the firewall plan,
# the net container) is imported there, while dockerd boots.
from berth.lifecycle import activity, dirs, hostobjects, repair
from berth.lifecycle.down import ROOT_FOR, drop_from_proxy, remove_share
from berth.lifecycle.startdecision import ADOPT, REPLACE, RESTART, Found, decide, launched_elsewhere
from berth.net import blocks, bridge, trespass
from berth.proxy import control

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


def up(cfg, name, clock=time.monotonic, prelaunched=None, launch_key=None):
    """Bring the user up (idempotent); see the module's docstring.

    `prelaunched`: the dockerd prelaunch.launch started before the config
    was read (a prelaunch.Launched, holding the user's lock), taken over if
    it is what this start would run, else stopped and started again; undone
    if this `up` fails or the config changed meanwhile. `launch_key`: the
    config file's identity when it was read (logindigest.identity); given,
    a cold start leaves the plan the next prelaunch launches from.

    Raises:
        UserRefused: not a user berth serves.
        BerthError: what failed (MissingBinary, NetworkError, DaemonError,
            SubnetsExhausted, LockTimeout, ...), after undoing a cold start.
    """
    if prelaunched is None:
        return _up(cfg, name, clock, None, launch_key)
    with prelaunched:  # undone, under its lock, unless this up takes it over
        if not launched_elsewhere(prelaunched.plan, paths.for_user(cfg, name).run_dir,
                                  locks.user_lock_path(cfg, name), launch_key):
            return _up(cfg, name, clock, prelaunched, launch_key)
    # The config read is not the one the plan named (changed in between):
    # what was launched is gone now, and this up takes the config's own lock.
    log.info("the config changed while %s's dockerd was launched from its plan; starting it again", name)
    return _up(cfg, name, clock, None, launch_key)


def _up(cfg, name, clock, prelaunched, launch_key):
    t0 = clock()
    account = users.resolve(name, cfg.users.min_uid, cfg.users.max_uid)
    dockerd = supervisor.find_dockerd(cfg.daemon.dockerd)
    need_root("up", ROOT_FOR)
    upaths = paths.for_user(cfg, account.name)
    br = paths.bridge_name(cfg, account.uid)
    # A prelaunched dockerd holds the user's lock (and goes, last, if this fails).
    with contextlib.nullcontext() if prelaunched is not None else user_lock(cfg, account.name):
        with contextlib.ExitStack() as undo:
            # Under the lock: a purge holds it until the last file is gone.
            dirs.prepare(cfg, upaths, account)
            sup = hostobjects.supervisor_for(cfg, upaths, dockerd, br)
            shared, relaunched = _launch_containerd(cfg, sup.running())  # it boots while the bridge is made
            lease = hostobjects.lease_table(cfg).acquire(account.name, account.uid, cfg.network.pool,
                                                         cfg.network.block_prefix, lambda: _networks_to_avoid(cfg))
            repair.clear_trespassers(cfg, {account.name: str(lease.block)}, own_bridge=br)
            layout = blocks.layout(lease.block)
            if bridge.ensure_bridge(br, layout.bridge_cidr, account.name):
                undo.callback(bridge.remove_bridge, br)
            rec = sup.running()
            address = shared.wait_ready() if shared is not None else ""
            cgroupfs, share = _apply_limits(cfg, account.name)
            hardened = cfg.security.mode == "hardened"
            wanted = (cfg, upaths, account, sup, br, layout, address, shared, launch_key, cgroupfs, share)
            is_prelaunched = prelaunched is not None and rec is not None and rec.pid == prelaunched.rec.pid
            doc, plan = _daemon_files(*wanted) if is_prelaunched else (None, None)
            start = decide(Found(
                account.name, rec is not None, own_socket=not serves_the_users_socket_itself(upaths),
                mode=rec.mode if rec is not None else cfg.security.mode, wanted_mode=cfg.security.mode,
                prelaunched=prelaunched is not None, is_prelaunched=is_prelaunched,
                as_planned=is_prelaunched and _runs_as_planned(prelaunched, upaths, account, hardened, doc, plan)))
            if start.reason and start.action != ADOPT:
                (log.warning if start.warn else log.info)("%s", start.reason)
            if start.action == RESTART:
                sup.stop()
            if start.starts:
                undo.callback(remove_share, cfg, account.name)
                if hardened:
                    userns.ensure(cfg, account)
                    userns.close_other_stores(upaths.data_root, userns.store_name(account))
                if plan is None:
                    doc, plan = _daemon_files(*wanted)
                if start.action == REPLACE:
                    _replace_prelaunched(sup, prelaunched, br, layout, account.name, undo)
                if start.action == ADOPT:
                    log.info("started dockerd for %s: pid %d (%s, %s)", account.name, rec.pid, sup.kind,
                             start.reason)
                else:
                    atomic_write(upaths.daemon_json, doc, mode=0o600)
                    if hardened:
                        _pin_again(cfg, upaths, account, shared, address)
                    rec = _start_dockerd(sup, shared, address)
                    if launch_key is not None:
                        _leave_plan(upaths, plan)  # (one launched from is this very plan)
                undo.callback(sup.stop)
            proxy = hostobjects.proxy_supervisor(cfg) if rec.mode == "hardened" else None
            if proxy is not None:
                proxy.launch()  # where none answers; it starts while dockerd does
                if start.starts:
                    undo.callback(drop_from_proxy, cfg, upaths)
            # dockerd takes a moment to start: the rules, and the imports of
            # iptc and the Docker SDK, are done meanwhile rather than before.
            _ensure_rules(cfg, account, lease.block, undo if start.starts else None)
            if proxy is not None:
                # Also while dockerd boots: until it answers, so does the proxy, with an error.
                _serve_through_proxy(cfg, upaths, account, layout, proxy)
            try:
                sup.wait_ready(rec, cfg.daemon.start_timeout, lambda: engine.ping(upaths.engine_socket))
            except DaemonError as e:
                if start.action != ADOPT:
                    raise
                # Launched from the plan, it may have met what `up` repaired since.
                log.warning("the dockerd launched for %s from its plan failed (%s); starting it again",
                            account.name, e.message)
                sup.stop(now=True)
                rec = _start_dockerd(sup, shared, address)
                sup.wait_ready(rec, cfg.daemon.start_timeout, lambda: engine.ping(upaths.engine_socket))
            if relaunched:
                # Every daemon that ran on the old one, this user's included.
                repair.wait_reconnected(cfg, repair.daemons_on_shared_containerd(cfg))
            if proxy is None:
                _hand_socket(upaths, account)
            if not engine.ping(upaths.socket):
                raise DaemonError(f"{upaths.socket} does not answer although dockerd does",
                                  hint="see proxy.log in " + str(cfg.paths.log_dir))
            net_ip = _ensure_net_container(cfg, upaths)
            if prelaunched is not None:
                prelaunched.take_over()
            undo.pop_all()
        if start.starts:
            activity.touch(upaths)  # a daemon just brought up is not idle

    result = UpResult(account.name, str(lease.block), br, rec.pid, net_ip,
                      upaths.docker_host, start.starts, clock() - t0, rec.mode)
    log.info("%s is up (block %s, dockerd pid %d, %s in %.2f s)", result.user, result.block, result.pid,
             "started" if start.starts else "already running", result.seconds)
    return result


def serves_the_users_socket_itself(upaths):
    """An upgrade guard: a running dockerd with no socket of berth's own
    was started by a berth that gave the user dockerd's own socket, which
    in hardened mode is the way round the policy proxy: it is restarted."""
    return not os.path.exists(upaths.engine_socket)


def _apply_limits(cfg, name):
    """Before dockerd starts its containers, and again for one that runs: a
    config's new limits apply. (whether cgroupfs is dockerd's cgroup driver, the user's share)"""
    cgroupfs = cgroups.cgroupfs_driver(cfg.daemon_json, supervisor.systemd_booted())
    share = limits.for_user(cfg.limits.defaults, cfg.limits.users, name)
    if cgroupfs:
        cgroups.apply(name, share)
    else:  # systemd's driver: the user's slice
        cgroups.apply_slice(name, share)
    return cgroupfs, share


def _daemon_files(cfg, upaths, account, sup, br, layout, address, shared, launch_key, cgroupfs, share):
    """(daemon.json, the launch plan) of this start, as text and as a dict."""
    remap = subids.account_name(account.uid) if cfg.security.mode == "hardened" else None  # userns.ensure's
    given = (address, *containerd.namespaces(account.name, account.uid)) if address else None
    doc = daemonjson.dumps(daemonjson.render(cfg, upaths, layout, br, remap, given,
                                             cgroups.parent_of(account.name, cgroupfs)))
    plan = _launch_plan(cfg, upaths, account, sup, layout, address, shared, launch_key,
                        cgroups.file_writes(account.name, share) if cgroupfs else [])
    return doc, plan


def _runs_as_planned(prelaunched, upaths, account, hardened, doc, plan):
    """The prelaunched dockerd runs what this start would: the plan and
    daemon.json it would write, and the user's mapping was there (one made
    only now, the dockerd launched before found none)."""
    return ((not hardened or userns.current(account) is not None) and plan == prelaunched.plan
            and read_trusted(upaths.daemon_json) == doc.encode())


def _launch_plan(cfg, upaths, account, sup, layout, address, shared, identity, cgroup_writes):
    """What this start runs, as the next prelaunch would launch it (see prelaunch.py)."""
    from berth import __version__

    return {"version": __version__, "identity": identity or "", "user": account.name, "uid": str(account.uid),
            "run_dir": upaths.run_dir, "supervisor": sup.kind, "dockerd": sup.dockerd,
            "daemon_json": upaths.daemon_json, "log_file": upaths.log_file,
            "lock": locks.user_lock_path(cfg, account.name), "bridge": sup.bridge_name,
            "bridge_cidr": str(layout.bridge_cidr), "mode": cfg.security.mode, "containerd": address,
            # Where dockerd must run: in the mount namespace of berth's own containerd.
            "containerd_record": shared.record_path if address and not shared.external else "",
            # The user's limits, set before dockerd restarts their containers.
            "cgroup": ";".join(f"{path}={value}" for path, value in cgroup_writes),
            # Where dockerd is born: the firewall knows users' daemons by it.
            "daemon_cgroup": sup.cgroup}


def _replace_prelaunched(sup, prelaunched, br, layout, owner, undo):
    """Stop a dockerd launched from an outdated plan, and its bridge if the
    plan made it: the usual start follows."""
    sup.stop(now=True)
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


def _pin_again(cfg, upaths, account, shared, address):
    """Before dockerd starts, and restarts the containers whose policy says
    so: their bind sources pinned again, as the user's rights stand now
    (after a reboot /run holds no pin). No container runs meanwhile. A
    source the user no longer reaches is left unpinned: that container
    fails to start, as dockerd fails one whose source is gone."""
    from berth.proxy import pins, spec

    store = pins.Store(account.uid, spec.pins_records(cfg, account.name), os.path.join(upaths.run_dir, "pins"))
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


def _start_dockerd(sup, shared, address):
    """dockerd launched the usual way, in the shared containerd's mount namespace."""
    ns = shared.mount_namespace() if address else hostns.HOST
    try:
        return sup.start(address, ns)
    finally:
        if isinstance(ns, int):
            os.close(ns)


def _launch_containerd(cfg, running):
    """(the shared containerd, whether it was started now), started where
    it does not run, for a daemon about to start or one that runs on it;
    (None, False) where dockerds run their own."""
    if running is not None and not running.containerd:
        return None, False  # a daemon with a containerd of its own (own, or an older berth) goes on with it
    shared = hostobjects.shared_containerd(cfg)
    return shared, shared is not None and shared.launch()


def _networks_to_avoid(cfg):
    """The host's networks, less what users' daemons put in the pool: no
    user can make a new block unavailable to the next one."""
    owners = hostobjects.user_interfaces(cfg, hostobjects.lease_table(cfg).read())
    return trespass.host_networks(bridge.host_networks_by_link(), cfg.network.pool, owners)


def _ensure_rules(cfg, account, block, undo):
    _enable_ip_forward()
    fw = hostobjects.firewall(cfg)
    hostobjects.ensure_user_rules(cfg, fw, account.name, block, account.uid)
    if undo is not None:
        undo.callback(fw.remove_user, account.name)


def _enable_ip_forward(proc_sys="/proc/sys/net/ipv4/ip_forward"):
    # NAT for the containers needs routing; dockerd turns it on too.
    with open(proc_sys) as f:
        if f.read().strip() == "1":
            return
    with open(proc_sys, "w") as f:
        f.write("1")
    log.info("enabled net.ipv4.ip_forward")


def _serve_through_proxy(cfg, upaths, account, layout, proxy):
    """Hardened mode: the proxy serves the user's socket (user:root 0600)
    in front of dockerd's own, from the spec written here."""
    from berth.proxy import spec

    atomic_write(upaths.proxy_spec, spec.render(spec.for_user(cfg, account, layout)), mode=0o600)
    proxy.wait_ready()
    control.ask(cfg.paths.run_dir, "serve", account.name)


def _hand_socket(upaths, account):
    """Trusted mode: only the user (and root) may talk to their daemon: user:root 0600.

    dockerd made it root:root 0660 ("group": "root"), so nobody else had a
    window; a shared primary group such as 'users' gets nothing either.
    """
    os.chown(upaths.socket, account.uid, 0)
    os.chmod(upaths.socket, 0o600)


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
