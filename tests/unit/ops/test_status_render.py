from berth.core import config
from berth.ops import status


def row(**kw):
    base = dict(user="alice", uid=1001, state="up", block="10.213.0.0/24", bridge="bth1001", bridge_present=True,
                net_ip="10.213.0.2", pid=42, containers_running=2, memory_bytes=130 * 2**20, sessions=0,
                uptime_seconds=3725.0, idle_seconds=125.0,
                docker_host="unix:///run/berth/alice/docker.sock", log_file="/var/log/berth/alice.log")
    base.update(kw)
    return status.UserStatus(**base)


def test_table_has_header_rows_and_summary(tmp_path):
    cfg = config.parse({"paths": {"state_dir": str(tmp_path)}})
    text = status.render_table(cfg, [row(), row(user="bob", uid=1002, state="down", pid=None, net_ip="",
                                                containers_running=None, memory_bytes=0, uptime_seconds=None,
                                                sessions=1)], {})
    lines = text.splitlines()
    assert lines[0].split() == list(status.COLUMNS)
    assert lines[1].split() == ["alice", "1001", "up", "10.213.0.0/24", "bth1001", "10.213.0.2", "42", "2",
                                "130", "MiB", "-", "-", "-", "n/a", "1h02m", "2m05s"]
    assert lines[2].split()[2] == "down" and lines[2].split()[-1] == "active"
    assert lines[-1] == "2 user(s), 1 up, 130 MiB in all; pool 10.213.0.0/16: 0/256 blocks leased; hardened mode"


def test_detail_shows_block_ip_docker_host_and_log():
    text = status.render_detail(row())
    for needle in ("10.213.0.0/24", "10.213.0.2", "unix:///run/berth/alice/docker.sock",
                   "/var/log/berth/alice.log", "130 MiB", "idle for"):
        assert needle in text


def test_json_schema_is_stable(tmp_path):
    cfg = config.parse({"paths": {"state_dir": str(tmp_path)}})
    doc = status.to_json(cfg, [row()], {})
    assert doc["schema"] == 1
    assert set(doc["users"][0]) == {
        "user", "uid", "state", "block", "bridge", "bridge_present", "net_ip", "pid", "containers_running",
        "memory_bytes", "sessions", "uptime_seconds", "idle_seconds", "docker_host", "log_file", "mode", "containerd",
        "memory_limit_bytes", "cgroup_memory_bytes", "cpu_percent", "disk_bytes", "disk_measured_at", "gpu_processes"}
    assert doc["summary"] == {"users": 1, "up": 1, "memory_bytes": 130 * 2**20, "pool": "10.213.0.0/16",
                              "mode": "hardened", "blocks_leased": 0, "blocks_total": 256}


def test_a_caller_who_may_not_read_the_leases_gets_null_there():
    cfg = config.Config()
    assert status.summary(cfg, [row()], None)["blocks_leased"] is None
    last = status.render_table(cfg, [row()], None).splitlines()[-1]
    assert last.endswith("pool 10.213.0.0/16: -/256 blocks leased; hardened mode")


def _proxy(**kw):
    base = {"state": "up", "pid": 77, "users": ["alice"], "connections": 3, "memory_bytes": 21 * 2**20}
    base.update(kw)
    return base


def test_the_proxy_has_a_line_of_its_own_that_says_what_its_absence_means():
    cfg = config.Config()
    hardened = [row(mode="hardened"), row(user="bob", uid=1002, mode="hardened")]
    assert status.render_proxy(_proxy(), hardened[:1]) == \
        "policy proxy: pid 77, serving 1 user(s), 3 open connection(s), 21 MiB"
    assert "NOT serving bob (berth up each)" in status.render_proxy(_proxy(), hardened)
    down = _proxy(state="down", pid=None, users=[], connections=0, memory_bytes=0)
    assert status.render_proxy(down, hardened).startswith("policy proxy: NOT RUNNING: the sockets of alice, bob refuse")
    assert "not running (berth up starts it" in status.render_proxy(down, [row(mode="trusted")])
    assert status.render_table(cfg, hardened[:1], {}, _proxy()).splitlines()[-1].startswith("policy proxy: pid 77")


def test_json_adds_the_proxy_without_changing_the_rest(tmp_path):
    cfg = config.parse({"paths": {"state_dir": str(tmp_path)}})
    doc = status.to_json(cfg, [row()], {}, _proxy())
    assert doc["proxy"] == _proxy() and doc["schema"] == 1
    assert "proxy" not in status.to_json(cfg, [row()], None)  # a user's own view: not theirs to see


def test_the_shared_containerd_has_a_line_of_its_own_that_says_what_its_absence_means(tmp_path):
    cfg = config.parse({"paths": {"state_dir": str(tmp_path)}})
    sock = "/run/berth/berth-containerd/containerd.sock"
    on_it = [row(containerd=sock), row(user="bob", uid=1002, containerd=sock), row(user="carol", uid=1003)]
    up = {"state": "up", "pid": 9, "address": sock, "memory_bytes": 22 * 2**20}
    assert status.render_containerd(up, on_it) == "shared containerd: pid 9, 2 daemon(s) on it, 22 MiB"
    down = dict(up, state="down", pid=None, memory_bytes=0)
    assert status.render_containerd(down, on_it).startswith(
        "shared containerd: NOT RUNNING: containers keep running, but alice, bob can start")
    assert status.render_containerd({"state": "own", "pid": None, "address": "", "memory_bytes": 0}, on_it) is None
    assert status.render_table(cfg, on_it, {}, None, up).splitlines()[-1].startswith("shared containerd: pid 9")
    doc = status.to_json(cfg, on_it, {}, None, up)
    assert doc["containerd"] == up and doc["users"][0]["containerd"] == sock


def test_usage_columns_and_what_top_sorts_by():
    cfg = config.Config()
    busy = row(user="bob", uid=1002, cpu_percent=187.4, cgroup_memory_bytes=3 << 30, memory_limit_bytes=64 << 30,
               disk_bytes=412 << 30, disk_measured_at=0.0, gpu_processes=[{"pid": 9, "memory_mib": 20480}])
    idle = row(cpu_percent=0.5, cgroup_memory_bytes=1 << 20, gpu_processes=[])
    table = status.render_table(cfg, [idle, busy], {}).splitlines()
    assert table[2].split()[10:14] == ["187%", "64.0GiB", "412.0GiB", "1/20480MiB"]
    assert table[1].split()[10:14] == ["0%", "none", "-", "-"]
    for key in ("cpu", "memory", "disk", "gpu"):
        assert [r.user for r in status.sort_rows([idle, busy], key)] == ["bob", "alice"]
    assert [r.user for r in status.sort_rows([busy, idle], "user")] == ["alice", "bob"]
    detail = status.render_detail(busy)
    assert "188% of a core" in detail or "187% of a core" in detail
