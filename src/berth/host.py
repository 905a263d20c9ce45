"""The host-wide objects, built in one place from the config: the lease
table, the firewall, the supervisors of one user's dockerd and of the
policy proxy, and the users berth knows on this host. Commands take them
from here rather than from each other."""

import os
import pwd

from . import containerd, engine, paths, proxyctl, supervisor, users
from .leases import LeaseTable


def lease_table(cfg):
    return LeaseTable(str(cfg.paths.state_dir), cfg.daemon.lock_timeout)


def firewall(cfg):
    """berth's rules in the kernel (imports python-iptables: not for the warm path)."""
    from .firewall import Firewall

    return Firewall(cfg)


def supervisor_for(cfg, upaths, dockerd=None, bridge_name=""):
    """How this host runs the user's dockerd: a systemd unit or a direct child."""
    return supervisor.for_host(upaths, dockerd or cfg.daemon.dockerd, cfg.daemon.stop_timeout,
                               cfg.daemon.supervisor, bridge_name, cfg.security.mode)


def proxy_supervisor(cfg):
    """How this host runs the policy proxy: a systemd unit where systemd runs."""
    use_systemd = cfg.daemon.supervisor == "systemd" or (cfg.daemon.supervisor == "auto"
                                                          and supervisor.systemd_booted())
    return proxyctl.ProxySupervisor(cfg.paths.run_dir, cfg.paths.log_dir, use_systemd)


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
