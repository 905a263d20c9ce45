import os
import stat

from berth.core import paths, proc
from berth.lifecycle import activity


def upaths(tmp_path):
    return paths.UserPaths("alice", str(tmp_path / "alice"), "", "")


def test_open_and_last_active_in_files_only_root_reads(tmp_path):
    up = upaths(tmp_path)
    activity.session_opened(up, os.getpid(), now=1000.0)
    assert activity.open_sessions(up) == [activity.session_name(os.getpid())]
    assert activity.last_active(up) == 1000.0
    assert stat.S_IMODE(os.stat(up.run_dir).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(os.path.join(up.run_dir, "sessions")).st_mode) == 0o700
    for name in ("last-active", f"sessions/{activity.session_name(os.getpid())}"):
        assert stat.S_IMODE(os.stat(os.path.join(up.run_dir, name)).st_mode) == 0o600


def test_a_session_whose_process_is_gone_does_not_count_forever(tmp_path):
    up = upaths(tmp_path)
    activity.session_opened(up, os.getpid())
    dead = os.path.join(up.run_dir, "sessions", "4194000-12345")  # no such process
    reused = os.path.join(up.run_dir, "sessions", f"{os.getpid()}-{proc.stat(os.getpid()).start_ticks + 1}")
    for path in (dead, reused):  # gone, and a pid since given to another process
        open(path, "w").close()
    assert activity.open_sessions(up) == [activity.session_name(os.getpid())]
    assert not os.path.exists(dead) and not os.path.exists(reused)


def test_a_reader_that_asks_not_to_prune_changes_nothing(tmp_path):
    """As `berth reap --dry-run` reads them."""
    up = upaths(tmp_path)
    os.makedirs(os.path.join(up.run_dir, "sessions"))
    stale = os.path.join(up.run_dir, "sessions", "4194000-1")
    open(stale, "w").close()
    assert activity.open_sessions(up, prune=False) == []
    assert os.path.exists(stale)


def test_live_jobs_are_the_grants_in_the_run_dir(tmp_path):
    u = paths.in_run_dir(str(tmp_path), "alice")
    assert activity.live_jobs(u) == ()
    os.makedirs(u.run_dir)
    for name in ("job-42.grant", "job-7.grant", "job-7.sock", "job-x.grant", "docker.sock"):
        open(os.path.join(u.run_dir, name), "w").close()
    assert activity.live_jobs(u) == (7, 42)
