"""The launch plan's text, and the cases where no prelaunch is even tried."""

import pytest

from berth import entry
from berth.lifecycle import prelaunch

PLAN = {"version": "1.0", "identity": "1:2:3:4", "user": "alice", "uid": "1001", "run_dir": "/run/berth/alice",
        "supervisor": "direct", "dockerd": "/usr/sbin/dockerd", "daemon_json": "/run/berth/alice/daemon.json",
        "log_file": "/var/log/berth/alice.log", "lock": "/var/lib/berth/lock/users/alice.lock",
        "bridge": "berth1001", "bridge_cidr": "10.200.0.1/25", "mode": "hardened",
        "containerd": "/run/berth/berth-containerd/containerd.sock", "containerd_record": "",
        "cgroup": "/sys/fs/cgroup/memory/berth/alice/memory.limit_in_bytes=-1",
        "daemon_cgroup": "/sys/fs/cgroup/unified/berth-dockerd/alice"}


def test_a_plan_reads_back_as_written():
    assert prelaunch.parse(prelaunch.render(PLAN).encode()) == PLAN


def test_a_value_with_a_newline_is_never_written():
    with pytest.raises(ValueError):
        prelaunch.render(dict(PLAN, bridge="b\nmode=trusted"))


@pytest.mark.parametrize("raw", [b"", b"version=1.0\n", b"\xff\xfe", None,
                                 prelaunch.render(PLAN).encode() + b"extra=1\n"])
def test_anything_but_a_whole_plan_is_no_plan(raw):
    assert prelaunch.parse(raw) is None


def test_only_berth_up_user_is_prelaunched(monkeypatch):
    tried = []
    monkeypatch.setattr(prelaunch, "launch", lambda path, user: tried.append(user))
    for args in (["up"], ["up", "alice", "--debug"], ["down", "alice"], ["up", "../etc"], ["up", "-h"]):
        assert entry.prelaunch_up(args) is None
    assert tried == []
    entry.prelaunch_up(["up", "alice"])
    assert tried == ["alice"]


def test_no_prelaunch_without_root(monkeypatch, tmp_path):
    tried = []
    monkeypatch.setattr(prelaunch, "_launch", lambda path, user: tried.append(user) or "launched")
    monkeypatch.setattr(prelaunch, "SYSTEMD_BOOTED", str(tmp_path / "no-systemd"))
    monkeypatch.setattr(prelaunch.os, "geteuid", lambda: 1000)
    assert prelaunch.launch("/etc/berth/berth.toml", "alice") is None and tried == []
    monkeypatch.setattr(prelaunch.os, "geteuid", lambda: 0)  # the same call as root is tried
    assert prelaunch.launch("/etc/berth/berth.toml", "alice") == "launched" and tried == ["alice"]


def launched_holding_a_lock(tmp_path):
    import fcntl
    import os

    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    # Nothing of it on disk (no record, no bridge or cgroup made): undoing it only lets go of the lock.
    return prelaunch.Launched(None, dict(PLAN, run_dir=str(tmp_path / "alice"), cgroup=""), False, fd)


def lock_is_free(tmp_path):
    import fcntl
    import os

    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def undone(monkeypatch):
    calls, real = [], prelaunch._abandon
    monkeypatch.setattr(prelaunch, "_abandon", lambda launched: (calls.append(launched), real(launched)))
    return calls


@pytest.mark.parametrize(("settle", "is_undone"), [(None, True), ("take_over", False), ("hand_on", False)])
def test_a_launch_is_undone_unless_taken_over_or_handed_on(tmp_path, undone, settle, is_undone):
    launched = launched_holding_a_lock(tmp_path)
    with launched:
        if settle:
            getattr(launched, settle)()
        assert lock_is_free(tmp_path) == (settle == "hand_on"), "handed on: let go of at once"
    assert (undone == [launched]) == is_undone
    assert launched.settled and launched.lock_fd is None and lock_is_free(tmp_path)


def test_a_failure_in_the_block_undoes_it_once_however_deep(tmp_path, undone):
    launched = launched_holding_a_lock(tmp_path)
    with pytest.raises(RuntimeError):
        with launched:  # the console script's
            with launched:  # `up`'s
                raise RuntimeError("up failed")
    assert undone == [launched] and lock_is_free(tmp_path)


def test_limits_are_set_before_the_launch_and_nothing_is_left_of_a_failure(tmp_path):
    import os

    for hierarchy in ("memory", "pids"):
        os.makedirs(tmp_path / hierarchy / "berth")
    writes = f"{tmp_path}/memory/berth/alice/memory.limit_in_bytes=100663296;{tmp_path}/pids/berth/alice/pids.max=max"
    made = prelaunch._set_limits(writes)
    assert made == [f"{tmp_path}/memory/berth/alice", f"{tmp_path}/pids/berth/alice"]
    assert (tmp_path / "memory/berth/alice/memory.limit_in_bytes").read_text() == "100663296"
    for directory in made:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)

    # No cpu hierarchy: nothing is launched (a real cgroup's directory goes again with rmdir, files and all).
    assert prelaunch._set_limits(f"{tmp_path}/cpu/berth/alice/cpu.shares=1024") is None
    assert not (tmp_path / "cpu").exists()
    assert prelaunch._set_limits("") == []
