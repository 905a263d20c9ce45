"""`berth reap`: take idle users down, collect what died, keep everyone else.

A user is active while any of these holds: a login session is open, a
Slurm job of theirs has a grant on this node (its Epilog has not run), a
process of theirs runs on the host, or a container other than the net
container runs in their daemon. Idle = none of these for
[reaper].idle_timeout seconds. The decision is a pure function of what was
observed (`decide`); the pass gathers, decides, acts and says why, also
when it does nothing.

Reaping stops dockerd and removes bridge and rules (`lifecycle.down`); the
lease and the data-root stay, so the next login gets everything back.
"""

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from berth.core import paths, proc
from berth.core.errors import BerthError
from berth.core.locks import user_lock
from berth.daemon import engine
from berth.lifecycle import activity, hostobjects, repair
from berth.lifecycle.down import down
from berth.net import bridge
from berth.ops import usage
from berth.ops.humanize import human_duration
from berth.proxy import control

log = logging.getLogger(__name__)

PARALLEL = 8


@dataclass(frozen=True)
class Observed:
    user: str
    state: str                 # up | starting | dead | down
    sessions: int
    processes: int             # the user's own processes on the host
    containers: tuple          # names of running containers, net container excluded
    last_active: float | None  # when anything above last held
    has_leftovers: bool = False  # a bridge of a daemon that is not running
    jobs: tuple = ()           # Slurm jobs with a grant on this node (their Epilog has not run)


@dataclass(frozen=True)
class Decision:
    action: str   # reap | keep | collect | none | repair (the policy proxy restarted)
    reason: str


def decide(o, idle_timeout, now):
    if o.state == "dead" or (o.state == "down" and o.has_leftovers):
        return Decision("collect", "its dockerd is gone; cleaning bridge, rules, socket and pidfile")
    if o.state == "down":
        return Decision("none", "down")
    if o.state == "starting":
        return Decision("keep", "its daemon is starting")
    if o.sessions:
        return Decision("keep", f"{o.sessions} session{'s' if o.sessions > 1 else ''} open")
    if o.jobs:
        return Decision("keep", f"Slurm job{'s' if len(o.jobs) > 1 else ''} {', '.join(map(str, o.jobs[:3]))}"
                                f"{' ...' if len(o.jobs) > 3 else ''} running")
    if o.containers:
        names = ", ".join(f'"{c}"' for c in o.containers[:3]) + (" ..." if len(o.containers) > 3 else "")
        return Decision("keep", f"container{'s' if len(o.containers) > 1 else ''} {names} running")
    if o.processes:
        return Decision("keep", f"{o.processes} process{'es' if o.processes > 1 else ''} running on the host")
    idle = now - (o.last_active if o.last_active is not None else now)
    if idle >= idle_timeout:
        return Decision("reap", f"idle for {human_duration(idle)} (limit {human_duration(idle_timeout)})")
    return Decision("keep", f"idle for {human_duration(idle)}, under the {human_duration(idle_timeout)} limit")


# --- gathering -----------------------------------------------------------------

# A user's systemd instance (kept alive by `loginctl enable-linger`) is
# session plumbing, not work: it alone must not keep a daemon forever.
PLUMBING = frozenset({"systemd", "(sd-pam)"})


def _user_processes(uid, exclude):
    count = 0
    for pid in proc.pids():
        if pid in exclude or proc.owner(pid) != uid:
            continue
        st = proc.stat(pid)
        if st is not None and st.state != "Z" and proc.comm(pid) not in PLUMBING:
            count += 1
    return count


def _running_containers(upaths, net_name):
    try:
        listing = engine.get_json(upaths.engine_socket, "/containers/json")
    except (OSError, ValueError):
        return ()
    names = [n.lstrip("/") for c in listing for n in c.get("Names", [])[:1]]
    return tuple(sorted(n for n in names if n != net_name))


def observe(cfg, name, lease, now, dry_run=False):
    """What the pass sees of one user. A dry run changes nothing, not even
    the session files of ended logins it would otherwise drop."""
    upaths = paths.for_user(cfg, name)
    supervisor = hostobjects.supervisor_for(cfg, upaths)
    state, _ = hostobjects.daemon_state(supervisor, upaths)
    uid = hostobjects.uid_of(name, lease)
    sessions = len(activity.open_sessions(upaths, prune=not dry_run))
    containers = _running_containers(upaths, cfg.net_container.name) if state == "up" else ()
    processes = _user_processes(uid, set(supervisor.processes())) if uid >= 0 and state == "up" else 0
    last = activity.last_active(upaths)
    rec = supervisor.record()
    if last is None and rec is not None:
        last = rec.started_at
    leftovers = state == "down" and uid >= 0 and bridge.bridge_exists(paths.bridge_name(cfg, uid))
    return Observed(name, state, sessions, processes, containers, last, leftovers, activity.live_jobs(upaths))


# --- the pass ----------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    user: str
    decision: Decision
    done: bool            # the action was carried out (False in a dry run or when aborted)
    freed_bytes: int = 0


def reap_pass(cfg, only=None, dry_run=False, now=None):
    now = time.time() if now is None else now
    table = hostobjects.lease_table(cfg).read()
    names = [only] if only else hostobjects.known_users(cfg, table)
    fw = hostobjects.firewall(cfg)
    rules = fw.rules_by_user()  # read once; only users whose rules differ are touched
    # A flush of the built-in chains (iptables -F) leaves berth's chains
    # whole but unhooked: every user's rules are then put back, jumps first.
    jumps_ok = fw.jumps_in_place()
    # dockerd takes about a second to exit; users are independent (each has
    # its own lock, and rule changes queue on the xtables lock), so a pass
    # over many idle users stops them side by side.
    outcomes = [] if dry_run else restore_containerd(cfg, names) + restore_proxy(cfg, names)
    if not dry_run:
        for link, address, owner, holder in repair.clear_trespassers(
                cfg, {n: str(lease.block) for n, lease in table.items()}):
            outcomes.append(Outcome(holder, Decision("repair", f"{address} on {link} lay in {owner}'s block; "
                                                               "removed"), True))
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        outcomes += list(pool.map(lambda n: _one(cfg, n, table.get(n), dry_run, now, rules.get(n, []), jumps_ok),
                                  names))
    if not only:
        outcomes += collect_orphans(cfg, table, dry_run)
    if not dry_run:
        usage.leave_cpu_samples(cfg, names)
        measure_disks(cfg, names)
    return outcomes


DISK_BUDGET = 30.0  # seconds of each pass for measuring data-roots


def measure_disks(cfg, names, budget=DISK_BUDGET):
    """Each user's data-root size, for `berth status` and `berth top` to
    read from a cache: a walk of hundreds of GB never runs on their path.
    The longest-unmeasured first, within `budget` seconds a pass: a user
    who fills their data-root with millions of files delays only their
    own figure, never the pass's other work."""
    deadline = time.monotonic() + budget
    oldest_first = sorted(names, key=lambda n: (usage.cached_disk(cfg, n) or (0, 0.0))[1])
    for name in oldest_first:
        if time.monotonic() > deadline:
            log.info("data-roots left unmeasured this pass (budget %g s): %s", budget,
                     ", ".join(oldest_first[oldest_first.index(name):]))
            return
        try:
            if usage.measure_disk(cfg, name, deadline) is None and time.monotonic() > deadline:
                log.info("%s's data-root was not measured within this pass's budget; the next one goes on", name)
        except (OSError, BerthError) as e:
            log.warning("could not measure %s's data-root: %s", name, e)


def restore_containerd(cfg, names):
    """A shared containerd that died leaves its daemons' containers running
    but unmanageable (no start, stop or exec) until their next login: the
    pass starts it again, and dockerd reconnects by itself."""
    shared = hostobjects.shared_containerd(cfg)
    if shared is None or shared.running() is not None:
        return []
    # berth's own, for the daemons started on it (even where the distribution's runs by now)
    on_it = [n for n in repair.daemons_on_shared_containerd(cfg, shared.own_address) if n in names]
    if not on_it:
        return []
    try:
        shared.ensure(own=True)
    except BerthError as e:  # the rest of the pass goes on: reaping, rules, the proxy
        log.error("the shared containerd is not running and could not be started: %s", e.one_line())
        return [Outcome("shared containerd", Decision("repair", f"it is not running, and starting it failed: "
                                                                f"{e.one_line()}"), False)]
    repair.wait_reconnected(cfg, on_it)
    log.warning("the shared containerd was not running; started it again (pid %d) for %s",
                shared.running().pid, ", ".join(on_it))
    return [Outcome("shared containerd", Decision("repair", f"it was not running; started again for "
                                                            f"{len(on_it)} daemon(s)"), True)]


def restore_proxy(cfg, names):
    """A proxy that died leaves hardened users' sockets refusing until
    their next login: the pass starts it again, and it serves everyone
    whose spec berth up left in place."""
    if not any(os.path.exists(paths.for_user(cfg, n).proxy_spec) for n in names):
        return []
    if control.ping(cfg.paths.run_dir) is not None:
        return []
    info = hostobjects.proxy_supervisor(cfg).ensure()
    log.warning("the policy proxy was not running; started it again (pid %d, %d user(s))", info["pid"],
                info["users"])
    return [Outcome("policy proxy", Decision("repair", f"it was not running; started again, serving "
                                                       f"{info['users']} user(s)"), True)]


def reconsider(cfg, name, now=None):
    """One user, by the pass's own rule, now (a Slurm job of theirs just
    ended): reaped if idle, else kept, and why. Their firewall rules are
    the pass's to check, not this."""
    now = time.time() if now is None else now
    return _one(cfg, name, hostobjects.lease_table(cfg).read().get(name), False, now, rules_seen=None)


def _one(cfg, name, lease, dry_run, now, rules_seen=(), jumps_ok=True):
    o = observe(cfg, name, lease, now, dry_run)
    d = decide(o, cfg.reaper.idle_timeout, now)
    upaths = paths.for_user(cfg, name)
    if d.action == "keep" and not dry_run and (o.sessions or o.jobs or o.processes or o.containers):
        activity.touch(upaths, now)  # activity seen by this pass counts as activity
    if (d.action == "keep" and not dry_run and o.state == "up" and lease is not None and rules_seen is not None
            and (not jumps_ok or list(rules_seen) != list(hostobjects.user_rules(cfg, name, lease.block, lease.uid)))):
        if _restore_rules(cfg, name, lease):
            d = Decision("keep", d.reason + "; its firewall rules were missing and are back")
    if d.action in ("none", "keep") or dry_run:
        if d.action == "keep":
            log.info("kept %s: %s", name, d.reason)
        return Outcome(name, d, False)
    if d.action == "collect":
        down(cfg, name)
        log.info("collected %s: %s", name, d.reason)
        return Outcome(name, d, True)
    return _reap(cfg, name, d, lease, now)


def _restore_rules(cfg, name, lease):
    """Put back the rules of a running user that a firewall reload
    (iptables-restore, firewalld) wiped; True if any were missing. Under the
    user's lock, so a concurrent `down` never gets rules re-added after it."""
    with user_lock(cfg, name):
        if hostobjects.supervisor_for(cfg, paths.for_user(cfg, name)).running() is None:
            return False
        changed = hostobjects.ensure_user_rules(cfg, hostobjects.firewall(cfg), name, lease.block, lease.uid)
    if changed:
        log.warning("restored the firewall rules of %s (wiped by a firewall reload?)", name)
    return changed


def _reap(cfg, name, d, lease, now):
    """Stop an idle user, unless they became active meanwhile.

    The warm login check takes no lock, so the two sides use a flag: the
    reaper raises `reaping` and then looks for sessions; a login records
    its session and then looks for the flag (warm.is_up). At least one of
    them sees the other: the reaper backs off, or the login takes the slow
    path, which waits for this lock and brings the daemon back up. Under
    the lock everything is looked at again (a `docker run` may just have
    started a job).
    """
    upaths = paths.for_user(cfg, name)
    flag = os.path.join(upaths.run_dir, "reaping")
    with user_lock(cfg, name):
        open(flag, "w").close()
        try:
            again = decide(observe(cfg, name, lease, now), cfg.reaper.idle_timeout, now)
            if again.action != "reap":
                log.info("kept %s: %s (seen while reaping)", name, again.reason)
                return Outcome(name, Decision("keep", again.reason + " (seen while reaping)"), False)
            supervisor = hostobjects.supervisor_for(cfg, upaths)
            freed = sum(proc.rss_bytes(p) for p in supervisor.processes())
            down(cfg, name, locked=True)
        finally:
            try:
                os.unlink(flag)
            except FileNotFoundError:
                pass
    log.info("reaped %s: %s; freed %d MiB", name, d.reason, freed // 2**20)
    return Outcome(name, d, True, freed)


def collect_orphans(cfg, table, dry_run):
    """berth's bridges and rules that belong to no lease: left by a crash or
    a purge that failed half-way. Only what carries berth's marks is touched."""
    outcomes = []
    leased_bridges = {paths.bridge_name(cfg, lease.uid) for lease in table.values()}
    for name in bridge.berth_bridges(cfg.network.bridge_prefix):
        if name not in leased_bridges:
            d = Decision("collect", f"bridge {name} belongs to no lease")
            if not dry_run:
                bridge.remove_bridge(name)
                log.info("removed orphan bridge %s", name)
            outcomes.append(Outcome(name, d, not dry_run))
    fw = hostobjects.firewall(cfg)
    for user in sorted(fw.users_with_rules() - set(table)):
        d = Decision("collect", f"rules of {user} belong to no lease")
        if not dry_run:
            fw.remove_user(user)
            log.info("removed orphan rules of %s", user)
        outcomes.append(Outcome(user, d, not dry_run))
    return outcomes


def render(outcome, dry_run):
    d = outcome.decision
    if d.action == "reap":
        verb = "would be reaped" if dry_run else ("reaped" if outcome.done else "kept")
    elif d.action == "collect":
        verb = "would be collected" if dry_run else "collected"
    elif d.action == "keep":
        verb = "kept"
    elif d.action == "repair":
        verb = "repaired"
    else:
        verb = "down"
    line = f"{outcome.user} {verb}: {d.reason}" if d.action != "none" else f"{outcome.user}: down"
    if outcome.freed_bytes:
        line += f" ({outcome.freed_bytes // 2**20} MiB freed)"
    return line
