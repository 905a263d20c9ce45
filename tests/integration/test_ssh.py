"""ssh into the box and docker just works: a real sshd with PAM."""

import json
import os
from concurrent.futures import ThreadPoolExecutor


def status(harness, user):
    return json.loads(harness.berth("status", user, "--json").stdout)["users"][0]


def new_user(harness, sshd):
    user = harness.add_user()
    sshd.authorize(user)
    return user


def test_first_login_runs_docker_on_the_users_own_daemon(harness, sshd):
    user = new_user(harness, sshd)
    assert status(harness, user)["state"] == "down"
    r = sshd.ssh(user, "docker", "info", "--format", "{{.DockerRootDir}}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == f"{harness.root}/state/users/{user}/docker"
    print("first login said:", repr(r.stdout), repr(r.stderr))
    assert status(harness, user)["state"] == "up"


def test_first_interactive_login_says_the_daemon_is_ready(harness, sshd):
    user = new_user(harness, sshd)
    r = interactive_login(sshd, user, "docker ps --format {{.Names}}; exit 0\n")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = berth_lines(r)
    assert len(lines) == 1 and "your Docker daemon is ready" in lines[0], r.stdout
    assert "net" in r.stdout.split()
    again = interactive_login(sshd, user, "exit 0\n")
    assert berth_lines(again) == [], "a warm login prints nothing"


def test_interactive_login_shell(harness, sshd):
    user = new_user(harness, sshd)
    r = sshd.ssh(user, 'bash -lc "docker ps --format {{.Names}}; echo DOCKER_HOST=$DOCKER_HOST"', tty=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "net" in r.stdout.split()
    assert f"DOCKER_HOST=unix://{harness.sock(user)}" in r.stdout


def test_five_logins_of_one_user_at_once_give_one_daemon(harness, sshd):
    user = new_user(harness, sshd)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: sshd.ssh(user, "docker", "ps", "-q"), range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert len(harness.dockerd_pids(user)) == 1


def test_eight_users_logging_in_at_once(harness, sshd):
    users = [new_user(harness, sshd) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda u: sshd.ssh(u, "docker", "info", "--format", "{{.Name}}"), users))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    blocks = [status(harness, u)["block"] for u in users]
    assert len(set(blocks)) == 8
    for u in users:
        assert len(harness.dockerd_pids(u)) == 1
        harness.berth("down", u)


def _broken(harness, text):
    """Swap the config the PAM line names for `text`; returns the restore."""
    with open(harness.config) as f:
        good = f.read()
    with open(harness.config, "w") as f:
        f.write(text)

    def restore():
        with open(harness.config, "w") as f:
            f.write(good)
    return restore


def berth_lines(r):
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("berth:")]


def interactive_login(sshd, user, typed):
    """A login shell on a pty, as a person gets it: sshd shows what PAM
    modules said only to such sessions (not to `ssh host command`)."""
    return sshd.ssh(user, tty=True, stdin=typed)


def test_login_survives_a_config_with_a_syntax_error(harness, sshd):
    user = new_user(harness, sshd)
    restore = _broken(harness, "[network\npool = \n")
    try:
        r = interactive_login(sshd, user, "echo still-$((1+1))-here; exit 3\n")
    finally:
        restore()
    assert r.returncode == 3
    assert "still-2-here" in r.stdout
    lines = berth_lines(r)
    assert len(lines) == 1 and "not valid TOML" in lines[0], r.stdout + r.stderr


def test_login_survives_a_missing_dockerd(harness, sshd):
    user = new_user(harness, sshd)
    with open(harness.config) as f:
        good = f.read()
    restore = _broken(harness, good.replace("[daemon]\n", '[daemon]\ndockerd = "dockerd-not-installed"\n'))
    try:
        r = interactive_login(sshd, user, "echo still-$((2+2))-here; exit 4\n")
    finally:
        restore()
    assert r.returncode == 4
    assert "still-4-here" in r.stdout
    lines = berth_lines(r)
    assert len(lines) == 1 and "dockerd-not-installed not found" in lines[0], r.stdout + r.stderr
    assert not os.path.exists(harness.sock(user))
