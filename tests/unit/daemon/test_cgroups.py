"""A user's cgroup on a scratch tree shaped like /sys/fs/cgroup (v1 and v2)."""

import os

import pytest

from berth.core import limits
from berth.daemon import cgroups


def v1_tree(tmp_path):
    for h in ("memory", "cpu", "cpuacct", "pids", "devices", "systemd"):
        (tmp_path / h).mkdir()
    return str(tmp_path)


def test_v1_limits_land_in_each_controllers_hierarchy(tmp_path):
    root = v1_tree(tmp_path)
    assert cgroups.version(root) == 1
    assert cgroups.apply("alice", limits.Limits(1 << 30, 300, 500), root) == []
    assert (tmp_path / "memory/berth/alice/memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (tmp_path / "cpu/berth/alice/cpu.shares").read_text() == "3072"
    assert (tmp_path / "pids/berth/alice/pids.max").read_text() == "500"
    assert cgroups.parent_of("alice") == "/berth/alice"


def test_v2_hands_the_controllers_down_and_limits_one_directory(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids io\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert cgroups.version(str(tmp_path)) == 2
    (tmp_path / "berth").mkdir()
    (tmp_path / "berth/cgroup.subtree_control").write_text("memory")
    cgroups.apply("alice", limits.Limits(2 << 30, 100, 0), str(tmp_path))
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (tmp_path / "berth/cgroup.subtree_control").read_text() == "+cpu +pids"
    assert (tmp_path / "berth/alice/memory.max").read_text() == str(2 << 30)
    assert (tmp_path / "berth/alice/pids.max").read_text() == "max"


def test_a_missing_controller_is_reported_not_fatal(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu").mkdir()
    failed = cgroups.apply("alice", limits.NONE, str(tmp_path))
    assert failed == ["cgroup v1 has no pids hierarchy here"]


def test_removal_takes_the_users_cgroup_from_every_hierarchy_deepest_first(tmp_path):
    root = v1_tree(tmp_path)
    cgroups.apply("alice", limits.NONE, root)
    for h in ("devices", "systemd", "cpuacct"):
        os.makedirs(tmp_path / h / "berth/alice/0123abcd")  # what runc made for a container of a killed daemon
    for d in cgroups.user_dirs("alice", root):
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if os.path.isfile(os.path.join(d, name)):
                os.unlink(os.path.join(d, name))  # (files in a real cgroup are not files: rmdir takes them)
    assert cgroups.remove("alice", root) == []
    assert not any(os.path.exists(tmp_path / h / "berth/alice") for h in os.listdir(tmp_path))
    assert os.path.isdir(tmp_path / "memory/berth")  # berth's own parent stays for the others


def test_status_reads_use_and_limit(tmp_path):
    d = tmp_path / "memory/berth/alice"
    d.mkdir(parents=True)
    (d / "memory.usage_in_bytes").write_text("1048576\n")
    (d / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroups.read("alice", str(tmp_path)) == (1 << 20, None)
    (d / "memory.limit_in_bytes").write_text(str(1 << 30))
    assert cgroups.read("alice", str(tmp_path)) == (1 << 20, 1 << 30)
    assert cgroups.read("bob", str(tmp_path)) is None


def test_a_cgroup_parent_path_only_where_dockerd_uses_the_cgroupfs_driver(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert cgroups.cgroupfs_driver({}, systemd_booted=False, root=str(tmp_path))
    assert cgroups.cgroupfs_driver({}, systemd_booted=True, root=str(tmp_path))  # v1 (no cgroup.controllers here)
    assert not cgroups.cgroupfs_driver({}, systemd_booted=True, root=str(v2))  # dockerd picks systemd's there
    assert cgroups.cgroupfs_driver({"exec-opts": ["native.cgroupdriver=cgroupfs"]}, True, str(v2))
    assert not cgroups.cgroupfs_driver({"exec-opts": ["native.cgroupdriver=systemd"]}, False, str(tmp_path))


def test_where_systemd_drives_cgroups_the_user_has_a_slice():
    from berth.core import limits as lim
    assert cgroups.slice_of("alice") == "berth-alice.slice"
    assert cgroups.slice_of("a-b") == "berth-a\\x2db.slice"  # not berth.slice/berth-a.slice/...
    assert cgroups.parent_of("alice", cgroupfs=False) == "berth-alice.slice"
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return type("R", (), {"returncode": 0, "stderr": ""})()
    assert cgroups.apply_slice("alice", lim.Limits(1 << 30, 200, 0), run) == []
    assert calls[0] == ["systemctl", "set-property", "--runtime", "berth-alice.slice", f"MemoryMax={1 << 30}",
                        "CPUWeight=200", "TasksMax=infinity"]
    cgroups.remove_slice("alice", run)
    assert calls[1:] == [["systemctl", "stop", "berth-alice.slice"], ["systemctl", "revert", "berth-alice.slice"]]


def test_a_slice_made_by_systemds_driver_is_read_too(tmp_path):
    d = tmp_path / "memory/berth.slice/berth-alice.slice"
    d.mkdir(parents=True)
    (d / "memory.usage_in_bytes").write_text("4096")
    (d / "memory.limit_in_bytes").write_text("8192")
    assert cgroups.read("alice", str(tmp_path)) == (4096, 8192)


# --- out of a Slurm job's cgroups ----------------------------------------------------

ADOPTED_V1 = """12:pids:/slurm/uid_1001/job_42/step_extern
11:memory:/slurm/uid_1001/job_42/step_extern/task_0
10:freezer:/slurm/uid_1001/job_42/step_extern
9:name=systemd:/user.slice/user-1001.slice/session-3.scope
2:cpu,cpuacct:/slurm/uid_1001/job_42/step_extern
0::/user.slice/user-1001.slice/session-3.scope
"""
ADOPTED_V2 = "0::/system.slice/slurmstepd.scope/job_42/step_extern/user/task_special\n"


@pytest.mark.parametrize("text, job", [(ADOPTED_V1, 42), (ADOPTED_V2, 42),
                                       ("0::/user.slice/user-1001.slice/session-3.scope\n", None),
                                       ("4:memory:/process_api/job_x\n", None)])
def test_a_slurm_job_is_told_by_its_cgroup(text, job):
    assert cgroups.slurm_job_of(text) == job


def test_leaving_a_job_writes_to_the_top_of_each_of_its_hierarchies(tmp_path):
    for d in ("pids", "memory", "freezer", "systemd", "cpu,cpuacct", "unified"):
        os.makedirs(tmp_path / d)
        (tmp_path / d / "cgroup.procs").write_text("")
    assert cgroups.leave_plan(ADOPTED_V1, str(tmp_path)) == [
        str(tmp_path / d / "cgroup.procs") for d in ("pids", "memory", "freezer", "cpu,cpuacct")]
    v2 = tmp_path / "v2"
    os.makedirs(v2)
    (v2 / "cgroup.controllers").write_text("")
    (v2 / "cgroup.procs").write_text("")
    assert cgroups.leave_plan(ADOPTED_V2, str(v2)) == [str(v2 / "cgroup.procs")]


def test_a_process_in_no_job_stays_where_it_is(tmp_path):
    own = tmp_path / "cgroup"
    own.write_text("0::/user.slice\n")
    assert cgroups.leave_slurm_job(str(tmp_path), str(own)) is None
