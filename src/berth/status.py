"""What each user's daemon is doing: gathered from leases, records and the
sockets (no Docker SDK), rendered as a table or JSON."""

import logging
import os
import pwd
import time
from dataclasses import asdict, dataclass

from . import bridge, engine, netcontainer, paths
from .lifecycle import leases, spawner_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserStatus:
    user: str
    uid: int
    block: str
    bridge: str
    state: str            # up | starting | dead | down
    pid: int | None
    containers_running: int | None
    uptime_seconds: float | None
    net_ip: str
    docker_host: str
    log_file: str
    bridge_present: bool

    def to_json(self):
        return asdict(self)


def known_users(cfg, lease_table):
    names = set(lease_table)
    try:
        names.update(d for d in os.listdir(cfg.paths.run_dir)
                     if os.path.isdir(os.path.join(cfg.paths.run_dir, d)))
    except FileNotFoundError:
        pass
    return sorted(names)


def _uid(name, lease):
    if lease is not None:
        return lease.uid
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


def user_status(cfg, name, lease, now=None):
    now = time.time() if now is None else now
    upaths = paths.for_user(cfg, name)
    spawner = spawner_for(cfg, upaths)
    uid = _uid(name, lease)
    br = paths.bridge_name(cfg, uid) if uid >= 0 else ""
    rec = spawner.running()
    state, running, net_ip = "down", None, ""
    if rec is not None:
        state = "up" if engine.ping(upaths.socket) else "starting"
    elif spawner.record() is not None:
        state = "dead"
    if state == "up":
        try:
            running = len(engine.get_json(upaths.socket, "/containers/json"))
            net = engine.get_json(upaths.socket, f"/containers/{cfg.net_container.name}/json")
            net_ip = netcontainer.ip_from_inspect(net)
        except (OSError, ValueError) as e:
            log.debug("status of %s: %s", name, e)
    return UserStatus(
        user=name, uid=uid, block=str(lease.block) if lease else "", bridge=br, state=state,
        pid=rec.pid if rec else None, containers_running=running,
        uptime_seconds=round(now - rec.started_at, 1) if rec else None,
        net_ip=net_ip, docker_host=upaths.docker_host, log_file=upaths.log_file,
        bridge_present=bool(br) and bridge.bridge_exists(br))


def collect(cfg, only=None, now=None):
    table = leases(cfg).read()
    names = [only] if only else known_users(cfg, table)
    return [user_status(cfg, n, table.get(n), now) for n in names]


def human_duration(seconds):
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _dash(value):
    return "-" if value in (None, "") else str(value)


COLUMNS = ("USER", "UID", "BLOCK", "BRIDGE", "STATE", "PID", "RUNNING", "UPTIME")


def render_table(rows):
    lines = [COLUMNS]
    for r in rows:
        lines.append((r.user, str(r.uid), _dash(r.block), _dash(r.bridge), r.state, _dash(r.pid),
                      _dash(r.containers_running), human_duration(r.uptime_seconds)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    up = sum(1 for r in rows if r.state == "up")
    out.append(f"{len(rows)} user(s), {up} up")
    return "\n".join(out)


def render_detail(r):
    pairs = (
        ("user", f"{r.user} (uid {r.uid})"), ("state", r.state), ("block", _dash(r.block)),
        ("bridge", f"{_dash(r.bridge)}{'' if r.bridge_present else ' (absent)'}"),
        ("dockerd pid", _dash(r.pid)), ("uptime", human_duration(r.uptime_seconds)),
        ("containers running", _dash(r.containers_running)), ("net container IP", _dash(r.net_ip)),
        ("DOCKER_HOST", r.docker_host), ("log", r.log_file),
    )
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)
