"""The host-wide objects, built in one place from the config: the lease
table, the firewall, the supervisors of one user's dockerd and of the
policy proxy, and the users berth knows on this host. Commands take them
from here rather than from each other."""

import os
import pwd

from berth.core import paths, users
from berth.daemon import cgroups, containerd, engine, supervisor
from berth.net.leases import LeaseTable
from berth.proxy import control


def lease_table(cfg):
    return LeaseTable(str(cfg.paths.state_dir), cfg.daemon.lock_timeout)


def firewall(cfg):
    """berth's rules in the kernel (imports python-iptables: not for the warm path)."""
    from berth.net.firewall import Firewall

    return Firewall(cfg, ip6=has_ipv6())


def has_ipv6(proc_sys="/proc/sys/net/ipv6"):
    """The kernel speaks IPv6 (every bridge then has link-local addresses)."""
    return os.path.isdir(proc_sys)


def daemon_cgroups(cfg, name, root=None):
    """The cgroups the firewall tells users' daemons apart by
    (rules.DaemonCgroups), or None on a host without cgroup2."""
    from berth.net.rules import DaemonCgroups

    if (root or cgroups.v2_root()) is None:
        return None
    unit = supervisor.unit_name(name) if supervisor.uses_systemd(cfg.daemon.supervisor) else None
    return DaemonCgroups(*cgroups.daemon_cgroups(name, unit))


def user_rules(cfg, name, block, uid, root=None):
    """The user's rules as this host runs them (pure but for the host's facts)."""
    from berth.net.rules import plan_user_rules

    return plan_user_rules(cfg, name, block, uid, daemon_cgroups(cfg, name, root), has_ipv6())


def ensure_user_rules(cfg, fw, name, block, uid, leases=None, root=None):
    """Put the user's rules in place (True if anything changed), and make
    sure the daemon cgroups they name are the ones that exist now: one made
    again since (a systemd unit's at each start, a slice emptied, a
    directory removed by hand) gets its rules written again, every user's
    for the cgroup above all daemons. The cgroups are made where missing:
    a rule can only name a cgroup that exists."""
    root = root or cgroups.v2_root()
    daemons = daemon_cgroups(cfg, name, root)
    planned = user_rules(cfg, name, block, uid, root)
    if daemons is None:
        return fw.ensure_user(name, planned)
    own, every = cgroups.ensure_daemon_dirs((daemons.own, daemons.every), root)
    if not cgroups.marked(every):
        leases = lease_table(cfg).read() if leases is None else leases
        with_rules = fw.users_with_rules()
        others = {n: lease for n, lease in leases.items() if n != name and n in with_rules}
        for n in others:
            cgroups.ensure_daemon_dirs((daemon_cgroups(cfg, n, root).own,), root)
        fw.rewrite({n: user_rules(cfg, n, lease.block, lease.uid, root) for n, lease in others.items()})
        changed = fw.ensure_user(name, planned, force=True)
        cgroups.mark(every)
    else:
        changed = fw.ensure_user(name, planned, force=not cgroups.marked(own))
    cgroups.mark(own)
    return changed


def supervisor_for(cfg, upaths, dockerd=None, bridge_name=""):
    """How this host runs the user's dockerd: a systemd unit or a direct child."""
    return supervisor.for_host(upaths, dockerd or cfg.daemon.dockerd, cfg.daemon.stop_timeout,
                               cfg.daemon.supervisor, bridge_name, cfg.security.mode)


def proxy_supervisor(cfg):
    """How this host runs the policy proxy: a systemd unit where systemd runs."""
    use_systemd = cfg.daemon.supervisor == "systemd" or (cfg.daemon.supervisor == "auto"
                                                          and supervisor.systemd_booted())
    return control.ProxySupervisor(cfg.paths.run_dir, cfg.paths.log_dir, use_systemd)


def shared_containerd(cfg):
    """The containerd users' dockerds share, or None where each runs its own."""
    if cfg.daemon.containerd == "own":
        return None
    use_systemd = cfg.daemon.supervisor == "systemd" or (cfg.daemon.supervisor == "auto"
                                                          and supervisor.systemd_booted())
    return containerd.Shared(cfg.paths.run_dir, cfg.paths.state_dir, cfg.paths.log_dir, cfg.daemon.containerd,
                             use_systemd)


def known_users(cfg, leases):
    """Users with a lease or a run dir: everyone berth has served here."""
    names = set(leases)
    try:
        # Not berth's own (berth-proxy, berth-containerd), nor what dockerd
        # makes beside a remapped user's run dir (alice.1001.995: its
        # prepareBundleDir, for a directory others may not pass).
        names.update(d for d in os.listdir(cfg.paths.run_dir)
                     if users.is_valid_name(d) and not d.startswith(users.RESERVED_PREFIX)
                     and os.path.isdir(os.path.join(cfg.paths.run_dir, d)))
    except FileNotFoundError:
        pass
    return sorted(names)


def uid_of(name, lease=None):
    """The user's uid: from their lease (they may since have been deleted), else passwd; -1 if unknown."""
    if lease is not None:
        return lease.uid
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


def daemon_state(sup, upaths):
    """(state, record): up (answers), starting (runs, no answer yet), dead
    (recorded but gone), down; the record of the dockerd that runs, or None."""
    rec = sup.running()
    if rec is not None:
        return ("up" if engine.ping(upaths.engine_socket) else "starting"), rec
    return ("dead" if sup.poll() == "exited" else "down"), None


def user_interfaces(cfg, leases):
    """{link: user} for the bridges users' daemons made: each user's own
    bridge, and every bridge network their running dockerd reports."""
    owner = {}
    for name, lease in leases.items():
        owner[paths.bridge_name(cfg, lease.uid)] = name
        try:
            networks = engine.get_json(paths.for_user(cfg, name).engine_socket, "/networks")
        except (OSError, ValueError):
            continue  # not running: no bridge of its own but the one above
        for net in networks:
            if net.get("Driver") == "bridge":
                options = net.get("Options") or {}
                owner[options.get("com.docker.network.bridge.name") or "br-" + net["Id"][:12]] = name
    return owner
