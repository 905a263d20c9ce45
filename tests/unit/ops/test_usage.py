"""Who uses what: CPU %, GPU processes by user, a data-root's size."""

import os

from berth.core import config
from berth.ops import usage


def test_cpu_percent_is_of_one_core():
    assert usage.cpu_percent(0, 100.0, 2_000_000_000, 101.0) == 200.0  # two cores busy for a second
    assert usage.cpu_percent(0, 100.0, 0, 100.0) is None
    assert usage.cpu_percent(5, 100.0, 1, 101.0) is None  # the counter went back: a new cgroup


def test_gpu_processes_are_read_from_nvidia_smi_and_found_in_users_cgroups(tmp_path):
    assert usage.parse_gpu_apps("4242, 20480\n77, [N/A]\nNo running processes found\n") == [(4242, 20480), (77, 0)]
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242/cgroup").write_text("12:pids:/berth/alice/0123\n4:memory:/berth/alice/0123\n")
    (tmp_path / "77").mkdir()
    (tmp_path / "77/cgroup").write_text("4:memory:/user.slice\n")
    assert usage.owner_of(4242, str(tmp_path)) == "alice"
    assert usage.owner_of(77, str(tmp_path)) is None
    assert usage.owner_of(9, str(tmp_path)) is None
    (tmp_path / "88").mkdir()
    (tmp_path / "88/cgroup").write_text("0::/berth.slice/berth-a\\x2db.slice/docker-0123.scope\n")
    assert usage.owner_of(88, str(tmp_path)) == "a-b"  # systemd's driver: the user's slice


def test_a_tree_is_measured_by_its_blocks_without_following_links(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_bytes(os.urandom(1 << 20))
    os.symlink("/usr", tmp_path / "d/link")
    size = usage.tree_bytes(str(tmp_path))
    assert (1 << 20) <= size < (1 << 20) + (64 << 10)


def test_cpu_of_users_over_a_window_when_nothing_was_sampled_before(tmp_path):
    root = tmp_path / "cg"
    d = root / "cpuacct/berth/alice"
    d.mkdir(parents=True)
    (d / "cpuacct.usage").write_text("1000000000")
    cfg = config.parse({"paths": {"run_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")}})
    clock = iter([100.0, 100.25])

    def sleep(_):
        (d / "cpuacct.usage").write_text("1125000000")  # half a core over the window

    out = usage.cpu_percents(cfg, ["alice", "bob"], str(root), now=lambda: next(clock), sleep=sleep)
    assert out == {"alice": 50.0, "bob": None}


def test_a_walk_past_its_deadline_gives_up_rather_than_hold_the_pass(tmp_path):
    import time
    (tmp_path / "a").mkdir()
    assert usage.tree_bytes(str(tmp_path), deadline=time.monotonic() - 1) is None
    assert usage.tree_bytes(str(tmp_path), deadline=time.monotonic() + 60) is not None
