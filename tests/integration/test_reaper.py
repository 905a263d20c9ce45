"""The reaper on real daemons: idle users go, busy ones stay, nothing is lost."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def reap0(harness):
    """The same installation with idle_timeout = 0: every idle user is reaped."""
    return harness.write_config("reap0.toml", extra="[reaper]\nidle_timeout = 0\n")


def state(harness, user):
    return json.loads(harness.berth("status", user, "--json").stdout)["users"][0]


def reap(harness, config, *args):
    return harness.berth("reap", *args, config=config).stdout


def test_idle_user_is_reaped_and_gets_everything_back(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    block = state(harness, user)["block"]
    image = harness.import_busybox(user)
    harness.docker(user, "volume", "create", "keep", cli=DEBIAN_CLI)
    harness.docker(user, "run", "-v", "keep:/data", "--name", "stopped", image, "sh", "-c", "echo kept > /data/f",
                   cli=DEBIAN_CLI)

    out = reap(harness, reap0, "--user", user)
    assert f"{user} reaped: idle" in out and "MiB freed" in out
    assert harness.dockerd_pids(user) == []
    assert not [b for b in harness.bridges() if b.endswith(str(state(harness, user)["uid"]))]
    assert harness.rules_mentioning(f"berth:{user}") == []
    assert state(harness, user)["state"] == "down"

    harness.berth("up", user)
    assert state(harness, user)["block"] == block
    assert image in harness.docker(user, "images", "--format", "{{.Repository}}:{{.Tag}}",
                                   cli=DEBIAN_CLI).stdout.split()
    assert harness.docker(user, "run", "--rm", "-v", "keep:/data", image, "cat", "/data/f",
                          cli=DEBIAN_CLI).stdout.strip() == "kept"
    assert "stopped" in harness.docker(user, "ps", "-a", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    harness.berth("down", user)


def test_running_container_keeps_the_user(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    image = harness.import_busybox(user)
    # sleep, PID 1, ignores SIGTERM: the down kills it after 1 s, not 10
    harness.docker(user, "run", "-d", "--stop-timeout", "1", "--name", "train", image, "sleep", "600", cli=DEBIAN_CLI)
    out = reap(harness, reap0, "--user", user)
    assert f'{user} kept: container "train" running' in out
    assert state(harness, user)["state"] == "up"
    harness.berth("down", user)


def test_live_process_on_the_host_keeps_the_user(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    # its own process group: runuser forks, and its `sleep` must go too
    sleeper = subprocess.Popen(["runuser", "-u", user, "--", "sleep", "600"], start_new_session=True)
    try:
        time.sleep(0.3)
        out = reap(harness, reap0, "--user", user)
        assert f"{user} kept: 1 process running on the host" in out
        assert state(harness, user)["state"] == "up"
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait()
    harness.berth("down", user)


def test_open_session_keeps_the_user_until_its_process_is_gone(harness, reap0):
    """A session lasts as long as the process that opened it (sshd's, here a
    shell that ran the hook): no close_session is needed, nor run."""
    user = harness.add_user()
    harness.berth("up", user)
    env = dict(os.environ, PAM_TYPE="open_session", PAM_USER=user)
    hook = [sys.executable, "-I", "-m", "berth", "pam", "--run-dir", f"{harness.root}/run",
            "--config", harness.config]
    session = subprocess.Popen(["sh", "-c", '"$@" && echo opened && exec sleep 60', "sh", *hook], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout.readline().strip() == "opened"
        assert f"{user} kept: 1 session open" in reap(harness, reap0, "--user", user)
    finally:
        session.kill()
        session.wait()
    assert f"{user} reaped" in reap(harness, reap0, "--user", user)


def test_dry_run_changes_nothing(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    pids = harness.dockerd_pids(user)
    sessions = f"{harness.root}/run/{user}/sessions"
    os.makedirs(sessions, exist_ok=True)
    ended = os.path.join(sessions, "4194000-1")  # a login whose process is gone
    open(ended, "w").close()
    out = reap(harness, reap0, "--dry-run", "--user", user)
    assert f"{user} would be reaped: idle" in out
    assert os.path.exists(ended)  # not even an ended session's file goes
    assert harness.dockerd_pids(user) == pids and state(harness, user)["state"] == "up"
    harness.berth("down", user)


def test_killed_daemon_is_collected(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    harness.crash_daemon(user)
    out = reap(harness, harness.config, "--user", user)
    assert f"{user} collected" in out
    assert harness.rules_mentioning(f"berth:{user}") == []
    assert not os.path.exists(harness.sock(user))
    assert not os.path.exists(f"{harness.root}/run/{user}/docker.pid")
    assert harness.processes_of(user) == []
    assert state(harness, user)["state"] == "down" and not state(harness, user)["bridge_present"]


def test_orphan_bridge_is_removed_but_a_foreign_one_is_left(harness):
    from berth.net import bridge
    ghost, foreign = f"{harness.bridge_prefix}99998", f"{harness.bridge_prefix}99999"
    bridge.ensure_bridge(ghost, "192.0.2.1/30", "ghost")
    subprocess.run(["ip", "link", "add", foreign, "type", "bridge"], check=True)
    try:
        out = reap(harness, harness.config)
        assert f"{ghost} collected: bridge {ghost} belongs to no lease" in out
        assert ghost not in harness.bridges() and foreign in harness.bridges()
    finally:
        bridge.remove_bridge(foreign)
        bridge.remove_bridge(ghost)


def test_login_racing_the_reaper_always_ends_with_a_working_daemon(harness, reap0):
    user = harness.add_user()
    harness.berth("up", user)
    hook = [sys.executable, "-m", "berth", "pam", "--run-dir", f"{harness.root}/run", "--config", harness.config]
    env = dict(os.environ, PAM_TYPE="open_session", PAM_USER=user)
    for i in range(8):
        reaper = threading.Thread(target=lambda: harness.berth("reap", "--user", user, config=reap0))
        reaper.start()
        time.sleep(0.03 * (i % 4))
        subprocess.run(hook, env=env, check=True, capture_output=True)
        try:
            r = harness.docker(user, "ps", "--format", "{{.Names}}", check=False, cli=DEBIAN_CLI)
            assert r.returncode == 0 and "net" in r.stdout.split(), f"round {i}: {r.stderr}"
        finally:
            reaper.join()
            subprocess.run(hook, env=dict(env, PAM_TYPE="close_session"), check=True)
    harness.berth("down", user)


def test_purge_deletes_data_and_releases_the_block(harness):
    user = harness.add_user()
    harness.berth("up", user)
    harness.import_busybox(user)
    r = harness.berth("down", "--purge", user, check=False)
    assert r.returncode == 1 and "--yes" in r.stderr, "no terminal: refuse without --yes"
    assert os.path.exists(f"{harness.root}/state/users/{user}/docker")
    harness.berth("down", "--purge", "--yes", user)
    assert not os.path.exists(f"{harness.root}/state/users/{user}")
    assert user not in json.load(open(f"{harness.root}/state/leases.json"))["leases"]
    assert harness.dockerd_pids(user) == []


def test_reaper_puts_back_rules_a_firewall_reload_wiped(harness):
    user = harness.add_user()
    harness.berth("up", user)
    image = harness.import_busybox(user)
    harness.docker(user, "run", "-d", "--name", "train", image, "sleep", "600", cli=DEBIAN_CLI)
    before = harness.rules_mentioning(f"berth:{user}")
    harness.wipe_rules()
    out = reap(harness, harness.config, "--user", user)
    assert "firewall rules were missing and are back" in out
    assert harness.rules_mentioning(f"berth:{user}") == before
    assert "are back" not in reap(harness, harness.config, "--user", user)
    harness.docker(user, "rm", "-f", "train", cli=DEBIAN_CLI)
    harness.berth("down", user)
