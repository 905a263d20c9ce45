"""A real PAM stack: libpam → pam_succeed_if → pam_exec → berth pam → pam_env,
with the lines `berth install` writes, in a service file of the test's own."""

import json
import os

from conftest import PamSession


def state(harness, user):
    return json.loads(harness.berth("status", user, "--json").stdout)["users"][0]["state"]


def test_session_brings_the_daemon_up_and_sets_docker_host(harness, pam_service):
    user = harness.add_user()
    assert state(harness, user) == "down"
    s = PamSession(pam_service, user)
    try:
        assert s.open() == 0
        assert state(harness, user) == "up"
        assert s.getenv("DOCKER_HOST") == f"unix://{harness.sock(user)}"
        assert any("your Docker daemon is ready" in m for m in s.messages), s.messages
        assert len(os.listdir(f"{harness.root}/run/{user}/sessions")) == 1
        assert s.close() == 0
    finally:
        s.end()
    # close runs nothing of berth's (type=open_session): the daemon stays, and
    # the session counts until the process that opened it (here: us) is gone
    assert state(harness, user) == "up"
    assert len(os.listdir(f"{harness.root}/run/{user}/sessions")) == 1
    assert os.path.exists(f"{harness.root}/run/{user}/last-active")

    warm = PamSession(pam_service, user)
    try:
        assert warm.open() == 0
        assert not any("berth" in m for m in warm.messages), "a warm login prints nothing"
        assert warm.getenv("DOCKER_HOST") == f"unix://{harness.sock(user)}"
        warm.close()
    finally:
        warm.end()
    harness.berth("down", user)


def test_users_berth_does_not_serve_get_nothing(harness, pam_service):
    s = PamSession(pam_service, "root")
    try:
        assert s.open() == 0
        assert s.getenv("DOCKER_HOST") is None
        assert not any("berth" in m for m in s.messages)
        s.close()
    finally:
        s.end()
    assert not os.path.exists(f"{harness.root}/run/root")


def test_warm_login_loads_no_heavy_library_and_no_lock(harness):
    import subprocess
    import sys
    user = harness.add_user()
    harness.berth("up", user)
    env = dict(os.environ, PAM_TYPE="open_session", PAM_USER=user)
    # exactly the PAM line's arguments
    r = subprocess.run([sys.executable, "-X", "importtime", "-I", "-m", "berth", "pam", "--run-dir",
                        f"{harness.root}/run", "--config", harness.config], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == ""
    modules = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    for heavy in ("docker", "pyroute2", "iptc", "filelock", "argparse", "tomllib", "dataclasses", "logging",
                  "json", "re", "enum"):
        assert heavy not in modules, f"the warm path imported {heavy}"
    assert len(os.listdir(f"{harness.root}/run/{user}/sessions")) == 1, "the session was still recorded"
    harness.berth("down", user)


def test_a_pam_line_without_run_dir_reads_the_config_once_then_its_digest(harness):
    """A hand-written PAM line: the first login reads the config and leaves its
    digest; the next ones read the digest only, until the config changes."""
    import subprocess
    import sys

    from berth.lifecycle import logindigest
    user = harness.add_user()
    harness.berth("up", user)
    env = dict(os.environ, PAM_TYPE="open_session", PAM_USER=user)

    def login():
        r = subprocess.run([sys.executable, "-X", "importtime", "-I", "-m", "berth", "pam", "--config",
                            harness.config], env=env, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout == "", r.stdout
        return {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}

    digest = logindigest.path_for(harness.config)
    if os.path.exists(digest):
        os.unlink(digest)  # left by this module's earlier logins
    assert "tomllib" in login()  # no digest yet: the config is read, and digested
    assert os.stat(digest).st_mode & 0o777 == 0o600 and os.stat(digest).st_uid == 0
    warm = login()
    for heavy in ("tomllib", "dataclasses", "ipaddress", "json", "re", "docker", "iptc"):
        assert heavy not in warm, f"the warm path imported {heavy}"
    with open(harness.config, "a") as f:
        f.write("\n# edited\n")
    assert "tomllib" in login()  # a changed config is read again, never trusted stale
    assert "tomllib" not in login()
    assert len(os.listdir(f"{harness.root}/run/{user}/sessions")) == 1  # one parent: one session
    harness.berth("down", user)


def test_slow_daemon_past_the_deadline_finishes_in_the_background(harness):
    """The login goes on at the deadline; the daemon still comes up."""
    import subprocess
    import sys
    import time
    slow = os.path.join(harness.root, "slow-dockerd")
    with open(slow, "w") as f:
        f.write("#!/bin/sh\nsleep 3\nexec dockerd \"$@\"\n")
    os.chmod(slow, 0o755)
    cfg = harness.write_config("slow.toml", dockerd=slow, extra="[login]\ndeadline = 0.5\n")
    user = harness.add_user()
    env = dict(os.environ, PAM_TYPE="open_session", PAM_USER=user)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "berth", "pam", "--run-dir", f"{harness.root}/run", "--config", cfg],
                       env=env, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert r.returncode == 0 and took < 2.5, took
    assert r.stdout.strip() == "berth: your Docker daemon is still starting; docker will work in a moment"
    for _ in range(200):
        if state(harness, user) == "up":
            break
        time.sleep(0.1)
    assert state(harness, user) == "up"
    harness.berth("down", user, config=cfg)
