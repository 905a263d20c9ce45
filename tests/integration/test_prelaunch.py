"""A cold `up` launches dockerd from the last start's plan before it reads
the config (prelaunch.py), and `up` checks that guess: real daemons."""

import dataclasses
import fcntl
import os
import pwd
import signal
import subprocess

from conftest import DEBIAN_CLI, PamSession
from test_lifecycle import assert_nothing_left

PRELAUNCHED = "before the config was read"


def log_since(harness, mark):
    with open(f"{harness.root}/log/berth.log") as f:
        f.seek(mark)
        return f.read()


def log_mark(harness):
    return os.path.getsize(f"{harness.root}/log/berth.log")


def bridge_addresses(name):
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", name], capture_output=True, text=True).stdout
    return sorted(line.split()[3] for line in out.splitlines())


def test_a_cold_up_launches_from_its_plan_and_works_as_any_other(harness):
    user = harness.add_user()
    harness.berth("up", user)
    first = harness.docker(user, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "net",
                           cli=DEBIAN_CLI).stdout.strip()
    harness.berth("down", user)
    assert os.path.exists(f"{harness.root}/run/{user}/d/launch.plan"), "down keeps the plan"

    mark = log_mark(harness)
    r = harness.berth("up", user)
    assert "started in" in r.stdout
    assert PRELAUNCHED in log_since(harness, mark)
    assert len(harness.dockerd_pids(user)) == 1
    # Everything a cold up gives: the net container, the proxy, the rules, the user's own socket.
    image = harness.import_busybox(user)
    assert harness.docker(user, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "net",
                          cli=DEBIAN_CLI).stdout.strip() == first
    out = harness.docker(user, "run", "--rm", "--net=container:net", image, "busybox", "id", "-u", as_user=user,
                         cli=DEBIAN_CLI).stdout
    assert out.strip() == "0"
    refused = harness.docker(user, "run", "--rm", "--privileged", image, "true", as_user=user, check=False,
                             cli=DEBIAN_CLI)
    assert "berth: --privileged" in refused.stderr
    assert harness.rules_mentioning(f"berth:{user}")
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_an_edited_config_is_read_before_anything_is_launched(harness):
    user = harness.add_user()
    harness.berth("up", user)
    harness.berth("down", user)
    with open(harness.config, "a") as f:
        f.write("# edited\n")  # a new identity: the plan names the config as it was
    mark = log_mark(harness)
    harness.berth("up", user)
    assert PRELAUNCHED not in log_since(harness, mark)
    harness.berth("down", user)
    mark = log_mark(harness)
    harness.berth("up", user)  # the plan the last start left names the edited config
    assert PRELAUNCHED in log_since(harness, mark)
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_an_outdated_plan_is_stopped_and_started_again(harness):
    """A plan that no longer says what `up` would run (here: another bridge
    address) launches, and `up` replaces what it launched."""
    user = harness.add_user()
    harness.berth("up", user)
    bridge = f"{harness.bridge_prefix}{pwd.getpwnam(user).pw_uid}"
    right = bridge_addresses(bridge)
    harness.berth("down", user)
    plan = f"{harness.root}/run/{user}/d/launch.plan"
    with open(plan) as f:
        text = f.read()
    wrong = "192.0.2.1/25"  # TEST-NET-1: on no host
    with open(plan, "w") as f:
        f.write("".join(f"bridge_cidr={wrong}\n" if line.startswith("bridge_cidr=") else line + "\n"
                        for line in text.splitlines()))

    mark = log_mark(harness)
    harness.berth("up", user)
    log = log_since(harness, mark)
    assert PRELAUNCHED not in log and "outdated plan" in log
    assert bridge_addresses(bridge) == right
    assert len(harness.dockerd_pids(user)) == 1
    assert harness.docker(user, "inspect", "-f", "{{.State.Running}}", "net", cli=DEBIAN_CLI).stdout.strip() == "true"
    with open(plan) as f:
        assert f"bridge_cidr={right[0]}\n" in f.read(), "the start leaves the plan it ran"
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_a_launch_nobody_takes_over_is_undone(harness):
    from berth.lifecycle import prelaunch

    user = harness.add_user()
    harness.berth("up", user)
    harness.berth("down", user)

    launched = prelaunch.launch(harness.config, user)
    assert launched is not None
    with launched:  # nobody takes it over
        assert harness.dockerd_pids(user) == [launched.rec.pid]
        assert f"{harness.bridge_prefix}{pwd.getpwnam(user).pw_uid}" in harness.bridges()
        lock = launched.plan["lock"]
        assert prelaunch.launch(harness.config, user) is None, "the lock is held: a second launch waits for `up`"
    assert_nothing_left(harness, user)
    assert not os.path.exists(f"{harness.root}/run/{user}/dockerd.rec")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_a_failed_up_after_a_launch_leaves_nothing(harness):
    """dockerd launched from the plan, then `up` gives up waiting for it
    (and for the one it starts in its place): nothing of either is left."""
    from berth.core.errors import DaemonError
    from berth.lifecycle import logindigest, prelaunch
    from berth.lifecycle.up import up

    user = harness.add_user()
    harness.berth("up", user)
    harness.berth("down", user)
    cfg = harness.cfg()
    impatient = dataclasses.replace(cfg, daemon=dataclasses.replace(cfg.daemon, start_timeout=0.001))
    launched = prelaunch.launch(harness.config, user)
    assert launched is not None
    # Held still, it never answers, however long `up` takes before it waits (its rules, IPv6 too)
    os.kill(launched.rec.pid, signal.SIGSTOP)
    try:
        up(impatient, user, prelaunched=launched, launch_key=logindigest.identity(harness.config))
    except DaemonError:
        pass
    else:
        raise AssertionError("up did not time out")
    assert launched.settled and launched.lock_fd is None
    assert_nothing_left(harness, user)
    harness.berth("up", user)  # and the next one works
    harness.berth("down", user)


def test_a_daemon_that_runs_is_never_launched_again(harness):
    from berth.lifecycle import prelaunch

    user = harness.add_user()
    harness.berth("up", user)
    pids = harness.dockerd_pids(user)
    assert prelaunch.launch(harness.config, user) is None
    r = harness.berth("up", user)
    assert "already running" in r.stdout and harness.dockerd_pids(user) == pids
    harness.berth("down", user)


def test_a_login_launches_from_the_plan_too(harness, pam_service):
    user = harness.add_user()
    harness.berth("up", user)
    harness.berth("down", user)
    mark = log_mark(harness)
    s = PamSession(pam_service, user)
    try:
        assert s.open() == 0
        assert any("your Docker daemon is ready" in m for m in s.messages), s.messages
        s.close()
    finally:
        s.end()
    assert PRELAUNCHED in log_since(harness, mark)
    assert harness.docker(user, "inspect", "-f", "{{.State.Running}}", "net", cli=DEBIAN_CLI).stdout.strip() == "true"
    assert harness.docker(user, "ps", as_user=user, cli=DEBIAN_CLI).returncode == 0
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_a_mapping_gone_since_the_plan_is_made_again_first(harness):
    """The user's mapping account removed while they were down (as purge
    does): what was launched without it goes, `up` makes it and starts again."""
    from berth.core import users
    from berth.daemon import userns

    user = harness.add_user()
    harness.berth("up", user)
    harness.berth("down", user)
    uid = pwd.getpwnam(user).pw_uid
    userns.remove(uid, user)
    mark = log_mark(harness)
    harness.berth("up", user)
    log = log_since(harness, mark)
    assert PRELAUNCHED not in log and ("outdated plan" in log or "exited at start" in log), log
    assert userns.current(users.lookup(user)) is not None
    out = harness.docker(user, "run", "--rm", harness.import_busybox(user), "busybox", "id", "-u", as_user=user,
                         cli=DEBIAN_CLI)
    assert out.stdout.strip() == "0"
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_the_limits_are_in_place_before_dockerd_is_launched(harness):
    """A user's containers restart with their daemon: the user's cgroup and
    its limits come first, and go with a launch nobody takes over."""
    from berth.daemon import cgroups
    from berth.lifecycle import prelaunch

    config = harness.write_config("prelaunch-limits.toml", extra='[limits]\nmemory = "96M"\npids = 300\n')
    user = harness.add_user()
    harness.berth("up", user, config=config)
    harness.berth("down", user, config=config)
    assert not [d for d in cgroups.user_dirs(user) if os.path.isdir(d)]

    launched = prelaunch.launch(config, user)
    assert launched is not None
    with launched:  # nobody takes it over
        writes = dict(entry.rsplit("=", 1) for entry in launched.plan["cgroup"].split(";"))
        assert str(96 << 20) in writes.values() and "300" in writes.values()
        for path, value in writes.items():
            with open(path) as f:
                assert f.read().strip() == value, path
    assert not [d for d in cgroups.user_dirs(user) if os.path.isdir(d)]
    assert_nothing_left(harness, user)


def test_a_config_changed_during_the_launch_is_the_one_that_counts(harness):
    """Saved between the launch and its reading: what was launched goes, and
    the up runs as the config now says, under its own lock."""
    from berth.lifecycle import logindigest, prelaunch
    from berth.lifecycle.up import up

    config = harness.write_config("prelaunch-edited.toml")
    user = harness.add_user()
    harness.berth("up", user, config=config)
    harness.berth("down", user, config=config)
    launched = prelaunch.launch(config, user)
    assert launched is not None
    with open(config, "a") as f:
        f.write("# saved meanwhile\n")
    result = up(harness.cfg(config), user, prelaunched=launched, launch_key=logindigest.identity(config))
    assert result.started and result.pid != launched.rec.pid
    assert launched.settled and launched.lock_fd is None
    assert harness.dockerd_pids(user) == [result.pid]
    harness.berth("down", user, config=config)
    assert_nothing_left(harness, user)
