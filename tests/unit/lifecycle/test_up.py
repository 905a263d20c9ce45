"""What `up` writes and checks without root: the plan it leaves, the upgrade guard, routing."""

from types import SimpleNamespace

from berth.core import config, paths, users
from berth.daemon.supervisor import DirectSupervisor
from berth.lifecycle import prelaunch, up
from berth.net import blocks


def test_the_plan_a_start_leaves_is_one_the_next_prelaunch_reads():
    cfg = config.Config()
    upaths = paths.for_user(cfg, "alice")
    sup = DirectSupervisor(upaths, "/usr/sbin/dockerd", bridge_name="berth1001", mode="hardened")
    shared = SimpleNamespace(record_path="/run/berth/berth-containerd/containerd.rec", external=False)
    plan = up._launch_plan(cfg, upaths, users.Account("alice", 1001, 1001, "/home/alice"), sup,
                           blocks.layout("10.200.0.0/24"), "/run/berth/berth-containerd/containerd.sock", shared,
                           "1:2:3:4", [("/sys/fs/cgroup/berth/alice/pids.max", "300")])
    assert set(plan) == set(prelaunch.FIELDS)
    assert prelaunch.parse(prelaunch.render(plan).encode()) == plan
    assert plan["containerd_record"] == shared.record_path and plan["bridge"] == "berth1001"
    assert plan["cgroup"] == "/sys/fs/cgroup/berth/alice/pids.max=300"


def test_no_identity_leaves_a_plan_no_prelaunch_takes():
    cfg = config.Config()
    upaths = paths.for_user(cfg, "alice")
    sup = DirectSupervisor(upaths, "/usr/sbin/dockerd", bridge_name="berth1001")
    plan = up._launch_plan(cfg, upaths, users.Account("alice", 1001, 1001, "/home/alice"), sup,
                           blocks.layout("10.200.0.0/24"), "", None, None, [])
    assert plan["identity"] == "" and plan["containerd_record"] == "" and plan["cgroup"] == ""


def test_a_daemon_without_berths_own_socket_serves_the_users_itself(tmp_path):
    upaths = paths.in_run_dir(tmp_path, "alice")
    assert up.serves_the_users_socket_itself(upaths)
    (tmp_path / "alice" / "d").mkdir(parents=True)
    open(upaths.engine_socket, "w").close()
    assert not up.serves_the_users_socket_itself(upaths)


def test_routing_is_turned_on_once(tmp_path):
    knob = tmp_path / "ip_forward"
    knob.write_text("0\n")
    up._enable_ip_forward(str(knob))
    assert knob.read_text() == "1"
    knob.write_text("1\n")
    up._enable_ip_forward(str(knob))
    assert knob.read_text() == "1\n", "left alone when on"
