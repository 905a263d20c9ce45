"""What each user's daemon is doing: gathered from leases, records and the
sockets (no Docker SDK), rendered as a table or JSON."""

import logging
import os
import pwd
import time
from dataclasses import asdict, dataclass

from berth.core import paths, proc
from berth.core.errors import BerthError
from berth.daemon import cgroups, engine, netcontainer
from berth.lifecycle import activity, hostobjects
from berth.net import blocks, bridge
from berth.ops import usage
from berth.ops.humanize import human_bytes, human_duration
from berth.proxy import control

log = logging.getLogger(__name__)


SCHEMA_VERSION = 1


@dataclass(frozen=True)
class UserStatus:
    """One user's row; its fields are the stable JSON schema (docs/status-json.md)."""
    user: str
    uid: int
    state: str                    # up | starting | dead | down
    block: str                    # "" when the user holds no lease
    bridge: str
    bridge_present: bool
    net_ip: str
    pid: int | None               # dockerd's pid
    containers_running: int | None  # the net container included
    memory_bytes: int             # PSS of dockerd, its shims and containers (not the shared containerd's)
    sessions: int                 # open login sessions
    uptime_seconds: float | None
    idle_seconds: float | None    # since the last activity; 0 while a session is open
    docker_host: str
    log_file: str
    mode: str | None = None       # what the running daemon runs in: hardened | trusted
    containerd: str = ""          # the shared containerd's socket it runs on; "": a containerd of its own
    memory_limit_bytes: int | None = None  # the user's cgroup's limit (all their containers together); null: none
    cgroup_memory_bytes: int | None = None  # what the kernel counts in that cgroup (page cache too); null: no cgroup
    cpu_percent: float | None = None  # recent CPU of all their containers, % of one core; null: not measured
    disk_bytes: int | None = None     # their data-root, as the last reaper pass measured it; null: not yet
    disk_measured_at: float | None = None
    gpu_processes: list | None = None  # [{"pid", "memory_mib"}] on GPUs; null: no nvidia-smi on this host

    def to_json(self):
        return asdict(self)


def user_status(cfg, name, lease, now=None, cpu=None, gpus=None):
    """One row. `cpu`: the user's CPU % (usage.cpu_percents), `gpus`: GPU
    processes by user (usage.gpu_processes; None: no nvidia-smi here)."""
    now = time.time() if now is None else now
    upaths = paths.for_user(cfg, name)
    supervisor = hostobjects.supervisor_for(cfg, upaths)
    uid = hostobjects.uid_of(name, lease)
    br = paths.bridge_name(cfg, uid) if uid >= 0 else ""
    state, rec = hostobjects.daemon_state(supervisor, upaths)
    running, net_ip = None, ""
    if state == "up":
        try:
            running = len(engine.get_json(upaths.engine_socket, "/containers/json"))
            net = engine.get_json(upaths.engine_socket, f"/containers/{cfg.net_container.name}/json")
            net_ip = netcontainer.ip_from_inspect(net)
        except (OSError, ValueError) as e:
            log.debug("status of %s: %s", name, e)
    memory = sum(proc.pss_bytes(p) for p in supervisor.processes()) if rec else 0
    sessions = len(activity.open_sessions(upaths))
    last = activity.last_active(upaths) or (rec.started_at if rec else None)
    return UserStatus(
        user=name, uid=uid, state=state, block=str(lease.block) if lease else "", bridge=br,
        bridge_present=bool(br) and bridge.bridge_exists(br), net_ip=net_ip,
        pid=rec.pid if rec else None, containers_running=running, memory_bytes=memory, sessions=sessions,
        uptime_seconds=round(now - rec.started_at, 1) if rec else None,
        idle_seconds=0.0 if sessions else (round(max(0.0, now - last), 1) if last else None),
        docker_host=upaths.docker_host, log_file=upaths.log_file, mode=rec.mode if rec else None,
        containerd=rec.containerd if rec else "", **_usage(cfg, name, cpu, gpus))


def _usage(cfg, name, cpu, gpus):
    memory = cgroups.read(name)
    disk = usage.cached_disk(cfg, name)
    return {"memory_limit_bytes": memory[1] if memory else None,
            "cgroup_memory_bytes": memory[0] if memory else None,
            "cpu_percent": cpu,
            "disk_bytes": disk[0] if disk else None, "disk_measured_at": disk[1] if disk else None,
            "gpu_processes": None if gpus is None else [{"pid": p, "memory_mib": m} for p, m in gpus.get(name, [])]}


def own_status(cfg, name):
    """A user's row as they may see it without root: only what their own
    socket tells. berth's files are root's alone (they name other users),
    so pid, memory, sessions and times are not known here."""
    upaths = paths.for_user(cfg, name)
    uid = hostobjects.uid_of(name)
    br = paths.bridge_name(cfg, uid)
    state, running, net_ip, block = "down", None, "", ""
    if engine.ping(upaths.socket):
        state = "up"
        try:
            running = len(engine.get_json(upaths.socket, "/containers/json"))
            net_ip = netcontainer.ip_from_inspect(
                engine.get_json(upaths.socket, f"/containers/{cfg.net_container.name}/json"))
            subnet = engine.get_json(upaths.socket, "/networks/bridge")["IPAM"]["Config"][0]["Subnet"]
            block = str(blocks.block_of_bridge(subnet))
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            log.debug("status of %s: %s", name, e)
    return UserStatus(
        user=name, uid=uid, state=state, block=block, bridge=br, bridge_present=bridge.bridge_exists(br),
        net_ip=net_ip, pid=None, containers_running=running, memory_bytes=0, sessions=0,
        uptime_seconds=None, idle_seconds=None, docker_host=upaths.docker_host, log_file=upaths.log_file)


def collect(cfg, only=None, now=None):
    """Every user's status; for a user who is not root, only their own row."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.getuid()).pw_name
        if only not in (None, me):
            raise BerthError(f"only root can look at {only}'s daemon",
                             hint=f"berth status (yours), or sudo berth status {only}")
        return [own_status(cfg, me)], None
    table = hostobjects.lease_table(cfg).read()
    if only and only not in hostobjects.known_users(cfg, table) and hostobjects.uid_of(only) < 0:
        raise BerthError(f"berth knows no user {only!r}", hint="'berth status' lists the users it serves")
    names = [only] if only else hostobjects.known_users(cfg, table)
    cpu = usage.cpu_percents(cfg, names)
    gpus = usage.gpu_processes()
    return [user_status(cfg, n, table.get(n), now, cpu.get(n), gpus) for n in names], table


def proxy_status(cfg):
    """The policy proxy, which every hardened user's socket goes through
    (root only: it is asked on its control socket). Its memory is the
    host's, not any one user's."""
    info = control.ping(cfg.paths.run_dir)
    if info is None:
        return {"state": "down", "pid": None, "users": [], "connections": 0, "memory_bytes": 0}
    served = control.stats(cfg.paths.run_dir) or {}
    return {"state": "up", "pid": info["pid"], "users": sorted(served), "connections": info["connections"],
            "memory_bytes": proc.pss_bytes(info["pid"])}


def containerd_status(cfg):
    """The containerd users' daemons share: berth's (state up or down), one
    berth was given (external), or none (own: each dockerd runs its own).
    Its memory is the host's, counted once, not any one user's."""
    shared = hostobjects.shared_containerd(cfg)
    if shared is None:
        return {"state": "own", "pid": None, "address": "", "memory_bytes": 0}
    if shared.external:
        return {"state": "external" if engine.listens(shared.external) else "down", "pid": None,
                "address": shared.external, "memory_bytes": 0}
    rec = shared.running()
    if rec is None:
        return {"state": "down", "pid": None, "address": shared.own_address, "memory_bytes": 0}
    return {"state": "up" if engine.listens(shared.own_address) else "starting", "pid": rec.pid,
            "address": shared.own_address, "memory_bytes": proc.pss_bytes(rec.pid)}


def render_containerd(shared, rows):
    """One line on the shared containerd; it says what a dead one means for whom."""
    on_it = [r.user for r in rows if r.state in ("up", "starting") and r.containerd]
    if shared["state"] == "own":
        return None
    if shared["state"] == "external":
        return f"shared containerd: {shared['address']} (not berth's), {len(on_it)} daemon(s) on it"
    if shared["state"] in ("up", "starting"):
        return (f"shared containerd: pid {shared['pid']}, {len(on_it)} daemon(s) on it, "
                f"{human_bytes(shared['memory_bytes'])}" + ("; starting" if shared["state"] == "starting" else ""))
    if on_it:
        return (f"shared containerd: NOT RUNNING: containers keep running, but {', '.join(on_it)} can start, stop "
                f"or exec none until their next login, berth up or reaper pass")
    return "shared containerd: not running (berth up starts it)"


def render_proxy(proxy, rows):
    """One line on the proxy; it says what a dead one means for whom."""
    hardened = [r.user for r in rows if r.mode == "hardened" and r.state in ("up", "starting")]
    if proxy["state"] == "up":
        unserved = [u for u in hardened if u not in proxy["users"]]
        return (f"policy proxy: pid {proxy['pid']}, serving {len(proxy['users'])} user(s), "
                f"{proxy['connections']} open connection(s), {human_bytes(proxy['memory_bytes'])}"
                + (f"; NOT serving {', '.join(unserved)} (berth up each)" if unserved else ""))
    if hardened:
        return (f"policy proxy: NOT RUNNING: the sockets of {', '.join(hardened)} refuse until their next login, "
                f"berth up or reaper pass")
    return "policy proxy: not running (berth up starts it for the first hardened user)"


def summary(cfg, rows, table):
    """The totals under the table. Pure; `table` is None for a caller who
    may not read the leases (blocks_leased is then null)."""
    return {
        "users": len(rows),
        "up": sum(1 for r in rows if r.state == "up"),
        "memory_bytes": sum(r.memory_bytes for r in rows),
        "pool": str(cfg.network.pool),
        "mode": cfg.security.mode,
        "blocks_leased": None if table is None else len(table),
        "blocks_total": blocks.pool_size(cfg.network.pool, cfg.network.block_prefix),
    }


def to_json(cfg, rows, table, proxy=None, shared=None):
    doc = {"schema": SCHEMA_VERSION, "users": [r.to_json() for r in rows], "summary": summary(cfg, rows, table)}
    if proxy is not None:
        doc["proxy"] = proxy
    if shared is not None:
        doc["containerd"] = shared
    return doc


def _dash(value):
    return "-" if value in (None, "") else str(value)


COLUMNS = ("USER", "UID", "STATE", "BLOCK", "BRIDGE", "NET-IP", "PID", "RUNNING", "MEMORY", "CPU", "LIMIT", "DISK",
           "GPU", "UPTIME", "IDLE")


def _gpu_cell(processes):
    if processes is None:
        return "n/a"
    return f"{len(processes)}/{sum(p['memory_mib'] for p in processes)}MiB" if processes else "-"


def _limit_cell(r):
    if r.cgroup_memory_bytes is None:
        return "-"
    return human_bytes(r.memory_limit_bytes).replace(" ", "") if r.memory_limit_bytes else "none"


SORT_KEYS = {  # berth top --sort: biggest first
    "cpu": lambda r: r.cpu_percent or 0.0,
    "memory": lambda r: r.cgroup_memory_bytes or r.memory_bytes or 0,
    "disk": lambda r: r.disk_bytes or 0,
    "gpu": lambda r: sum(p["memory_mib"] for p in r.gpu_processes or []),
    "user": None,
}


def sort_rows(rows, key):
    if SORT_KEYS.get(key) is None:
        return sorted(rows, key=lambda r: r.user)
    return sorted(rows, key=lambda r: (-SORT_KEYS[key](r), r.user))


def render_table(cfg, rows, table, proxy=None, shared=None):
    lines = [COLUMNS]
    for r in rows:
        lines.append((r.user, str(r.uid), r.state, _dash(r.block), _dash(r.bridge), _dash(r.net_ip), _dash(r.pid),
                      _dash(r.containers_running), human_bytes(r.memory_bytes),
                      "-" if r.cpu_percent is None else f"{r.cpu_percent:.0f}%", _limit_cell(r),
                      human_bytes(r.disk_bytes).replace(" ", "") if r.disk_bytes else "-", _gpu_cell(r.gpu_processes),
                      human_duration(r.uptime_seconds), "active" if r.sessions else human_duration(r.idle_seconds)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    s = summary(cfg, rows, table)
    out.append(f"{s['users']} user(s), {s['up']} up, {human_bytes(s['memory_bytes'])} in all; "
               f"pool {s['pool']}: {_dash(s['blocks_leased'])}/{s['blocks_total']} blocks leased; "
               f"{s['mode']} mode")
    if proxy is not None:
        out.append(render_proxy(proxy, rows))
    if shared is not None and render_containerd(shared, rows):
        out.append(render_containerd(shared, rows))
    return "\n".join(out)


def render_detail(r):
    pairs = (
        ("user", f"{r.user} (uid {r.uid})"), ("state", r.state), ("block", _dash(r.block)),
        ("bridge", f"{_dash(r.bridge)}{'' if r.bridge_present else ' (absent)'}"),
        ("net container IP", _dash(r.net_ip)), ("dockerd pid", _dash(r.pid)),
        ("containers running", _dash(r.containers_running)), ("memory", human_bytes(r.memory_bytes)),
        ("memory limit", human_bytes(r.memory_limit_bytes) if r.memory_limit_bytes else "none"),
        ("cgroup memory", human_bytes(r.cgroup_memory_bytes) if r.cgroup_memory_bytes is not None else "-"),
        ("CPU", "-" if r.cpu_percent is None else f"{r.cpu_percent:.0f}% of a core"),
        ("disk", human_bytes(r.disk_bytes) + f" (measured {human_duration(time.time() - r.disk_measured_at)} ago)"
         if r.disk_bytes else "- (the next reaper pass measures it)"),
        ("GPU", "n/a (no nvidia-smi)" if r.gpu_processes is None else _gpu_cell(r.gpu_processes)),
        ("sessions open", str(r.sessions)), ("uptime", human_duration(r.uptime_seconds)),
        ("idle for", "active" if r.sessions else human_duration(r.idle_seconds)),
        ("mode", _dash(r.mode)), ("DOCKER_HOST", r.docker_host), ("log", r.log_file),
    )
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)
