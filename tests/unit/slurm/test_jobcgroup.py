import glob
import os

import pytest

from berth.slurm import jobcgroup

G = 1 << 30


@pytest.mark.parametrize("text, value", [("200000 100000\n", 2_000_000_000), ("max 100000\n", 0),
                                         ("50000 100000", 500_000_000), ("", 0)])
def test_v2_cpu_max_in_nano_cpus(text, value):
    assert jobcgroup.cpu_max(text) == value


def test_v1_quota_in_nano_cpus():
    assert jobcgroup.cfs_quota("300000\n", "100000\n") == 3_000_000_000
    assert jobcgroup.cfs_quota("-1\n", "100000\n") == 0


@pytest.mark.parametrize("text, count", [("0-3,8\n", 5), ("2", 1), ("", 0), ("0-", 0)])
def test_cpusets_are_counted(text, count):
    assert jobcgroup.cpuset_count(text) == count


def test_a_quota_wins_then_a_cpuset_narrower_than_the_node():
    assert jobcgroup.cpus_of(1_500_000_000, 4, 8) == 1_500_000_000
    assert jobcgroup.cpus_of(0, 4, 8) == 4_000_000_000
    assert jobcgroup.cpus_of(0, 8, 8) == 0  # the whole node: no limit to hold


def _tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def test_slurms_v2_job_cgroup_is_found_under_slurmstepd_scope(tmp_path):
    _tree(tmp_path, {"cgroup.controllers": "cpuset cpu memory",
                     "system.slice/slurmstepd.scope/job_42/memory.max": "4294967296\n",
                     "system.slice/slurmstepd.scope/job_42/cpu.max": "max 100000\n",
                     "system.slice/slurmstepd.scope/job_42/cpuset.cpus.effective": "0-1\n"})
    assert jobcgroup.slurm_limits(1001, 42, str(tmp_path), online=8) == (4 * G, 2_000_000_000)
    assert jobcgroup.slurm_limits(1001, 43, str(tmp_path), online=8) == (0, 0)


def test_slurms_v1_job_cgroups_are_found_per_controller(tmp_path):
    _tree(tmp_path, {"memory/slurm/uid_1001/job_42/memory.limit_in_bytes": "2147483648\n",
                     "cpu/slurm/uid_1001/job_42/cpu.cfs_quota_us": "-1\n",
                     "cpu/slurm/uid_1001/job_42/cpu.cfs_period_us": "100000\n",
                     "cpuset/slurm/uid_1001/job_42/cpuset.cpus": "3\n"})
    assert jobcgroup.slurm_limits(1001, 42, str(tmp_path), online=4) == (2 * G, 1_000_000_000)
    assert jobcgroup.slurm_limits(1002, 42, str(tmp_path), online=4) == (0, 0)


def test_the_jobs_parent_lies_below_the_users_for_either_driver():
    assert jobcgroup.parent("alice", 42) == "/berth/alice/job-42"
    assert jobcgroup.parent("a-b", 42, cgroupfs=False) == "berth-a\\x2db-job42.slice"


def test_the_jobs_limits_in_either_version_and_for_systemd():
    assert jobcgroup.file_writes("alice", 42, 2 * G, 1_500_000_000, 2) == [
        ("", "berth/alice/job-42/memory.max", str(2 * G)), ("", "berth/alice/job-42/cpu.max", "150000 100000")]
    assert jobcgroup.file_writes("alice", 42, 0, 0, 1) == [
        ("memory", "berth/alice/job-42/memory.limit_in_bytes", "-1"),
        ("cpu", "berth/alice/job-42/cpu.cfs_period_us", "100000"),
        ("cpu", "berth/alice/job-42/cpu.cfs_quota_us", "-1")]
    assert jobcgroup.slice_properties(2 * G, 2_000_000_000) == [f"MemoryMax={2 * G}", "CPUQuota=200%"]
    assert jobcgroup.slice_properties(0, 0) == ["MemoryMax=infinity", "CPUQuota="]


def test_make_and_remove_on_a_v1_tree(tmp_path):
    for c in ("memory", "cpu", "pids"):
        os.makedirs(tmp_path / c)
    assert jobcgroup.make("alice", 42, 2 * G, 0, root=str(tmp_path)) == []
    assert (tmp_path / "memory/berth/alice/job-42/memory.limit_in_bytes").read_text() == str(2 * G)
    assert (tmp_path / "cpu/berth/alice/job-42/cpu.cfs_quota_us").read_text() == "-1"
    os.unlink(tmp_path / "memory/berth/alice/job-42/memory.limit_in_bytes")  # a real cgroupfs has no files to rm
    for name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"):
        os.unlink(tmp_path / "cpu/berth/alice/job-42" / name)
    assert jobcgroup.remove("alice", 42, root=str(tmp_path)) == []
    assert not (tmp_path / "memory/berth/alice/job-42").exists() and (tmp_path / "memory/berth/alice").exists()


def test_systemds_driver_limits_the_jobs_slice():
    calls = []

    class Done:
        returncode, stderr = 0, ""

    def run(argv, **kw):
        calls.append(argv)
        return Done()

    assert jobcgroup.make("alice", 42, G, 0, cgroupfs=False, run=run) == []
    assert calls == [["systemctl", "set-property", "--runtime", "berth-alice-job42.slice", f"MemoryMax={G}",
                      "CPUQuota="]]


def test_debians_slurm_node_directory_is_found_too(tmp_path):
    _tree(tmp_path, {"memory/slurm_node1/uid_1001/job_42/memory.limit_in_bytes": "104857600\n"})
    assert jobcgroup.slurm_limits(1001, 42, str(tmp_path), online=4) == (100 << 20, 0)


def test_without_slurms_cgroup_the_allocated_cpus_hold_and_memory_is_unknown(tmp_path):
    os.makedirs(tmp_path / "memory")
    assert jobcgroup.slurm_limits(1001, 42, str(tmp_path), online=4, allocated=1) == (0, 1_000_000_000)
    assert jobcgroup.slurm_limits(1001, 42, str(tmp_path), online=4, allocated=4) == (0, 0)


def test_where_slurms_memory_limit_will_be_is_known_before_its_cgroup_exists(tmp_path):
    """Globs the proxy reads once the job's cgroup exists (22.05 makes it after the Prolog)."""
    os.makedirs(tmp_path / "memory")
    v1 = jobcgroup.slurm_memory_files(1001, 42, str(tmp_path))
    assert v1 == (f"{tmp_path}/memory/slurm*/uid_1001/job_42/memory.limit_in_bytes",)
    _tree(tmp_path, {"memory/slurm_node1/uid_1001/job_42/memory.limit_in_bytes": "104857600\n"})
    assert [p for pattern in v1 for p in glob.glob(pattern)] == [
        f"{tmp_path}/memory/slurm_node1/uid_1001/job_42/memory.limit_in_bytes"]
    assert jobcgroup.slurm_memory_files(1001, 42, "/cg", version=2) == (
        "/cg/*.slice/*slurmstepd.scope/job_42/memory.max", "/cg/*slurmstepd.scope/job_42/memory.max")


def test_berths_cgroup_of_the_job_has_its_memory_file_in_either_version():
    assert jobcgroup.memory_file("alice", 42, "/cg", version=1) == "/cg/memory/berth/alice/job-42/memory.limit_in_bytes"
    assert jobcgroup.memory_file("alice", 42, "/cg", version=2) == "/cg/berth/alice/job-42/memory.max"
