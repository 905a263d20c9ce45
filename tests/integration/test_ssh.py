"""ssh into the box and docker just works: a real sshd with PAM."""

import contextlib
import json
import os
import pwd
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import DEBIAN_CLI, DOCKER_CLIS


def status(harness, user):
    return json.loads(harness.berth("status", user, "--json").stdout)["users"][0]


def new_user(harness, sshd):
    user = harness.add_user()
    sshd.authorize(user)
    return user


def test_first_login_runs_docker_on_the_users_own_daemon(harness, sshd):
    """Every CLI finds the user's socket in the DOCKER_HOST the login set:
    Debian's on the first (cold) login, each other on the next (one user:
    a cold login is seconds)."""
    user = new_user(harness, sshd)
    assert status(harness, user)["state"] == "down"
    for _, cli in sorted(DOCKER_CLIS, key=lambda c: c[1] != DEBIAN_CLI):
        r = sshd.ssh(user, cli, "info", "--format", "{{.DockerRootDir}}")
        assert r.returncode == 0, (cli, r.stderr)
        # hardened mode: the remapped store <uid>.<gid> inside the data-root
        assert r.stdout.strip().splitlines()[-1].startswith(
            f"{harness.root}/state/users/{user}/docker/{pwd.getpwnam(user).pw_uid}."), cli
    assert status(harness, user)["state"] == "up"


def test_first_interactive_login_says_the_daemon_is_ready(harness, sshd):
    user = new_user(harness, sshd)
    r = interactive_login(sshd, user, f"{DEBIAN_CLI} ps --format {{{{.Names}}}}; exit 0\n")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = berth_lines(r)
    assert len(lines) == 1 and "your Docker daemon is ready" in lines[0], r.stdout
    assert "net" in r.stdout.split()
    again = interactive_login(sshd, user, "exit 0\n")
    assert berth_lines(again) == [], "a warm login prints nothing"


def test_interactive_login_shell(harness, sshd):
    """Every CLI, in one login (a cold login is seconds)."""
    user = new_user(harness, sshd)
    each = "; ".join(f"echo {name}; {cli} ps --format {{{{.Names}}}}" for name, cli in DOCKER_CLIS)
    r = sshd.ssh(user, f'bash -lc "{each}; echo DOCKER_HOST=$DOCKER_HOST"', tty=True)
    assert r.returncode == 0, r.stdout + r.stderr
    words = r.stdout.split()
    for name, _ in DOCKER_CLIS:
        assert words[words.index(name) + 1] == "net", r.stdout
    assert f"DOCKER_HOST=unix://{harness.sock(user)}" in r.stdout


def test_five_logins_of_one_user_at_once_give_one_daemon(harness, sshd):
    user = new_user(harness, sshd)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: sshd.ssh(user, DEBIAN_CLI, "ps", "-q"), range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert len(harness.dockerd_pids(user)) == 1


def test_eight_users_logging_in_at_once(harness, sshd):
    users = [new_user(harness, sshd) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda u: sshd.ssh(u, DEBIAN_CLI, "info", "--format", "{{.Name}}"), users))
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    blocks = [status(harness, u)["block"] for u in users]
    assert len(set(blocks)) == 8
    for u in users:
        assert len(harness.dockerd_pids(u)) == 1
        harness.berth("down", u)


@contextlib.contextmanager
def broken_config(harness, break_it):
    """The config the PAM line names, broken by `break_it(text)` for the block."""
    with open(harness.config) as f:
        good = f.read()
    with open(harness.config, "w") as f:
        f.write(break_it(good))
    try:
        yield
    finally:
        with open(harness.config, "w") as f:
            f.write(good)


def berth_lines(r):
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("berth:")]


def interactive_login(sshd, user, typed):
    """A login shell on a pty, as a person gets it: sshd shows what PAM
    modules said only to such sessions (not to `ssh host command`)."""
    return sshd.ssh(user, tty=True, stdin=typed)


@pytest.mark.parametrize("break_it, code, words", [
    (lambda good: "[network\npool = \n", 3, "not valid TOML"),
    (lambda good: good.replace("[daemon]\n", '[daemon]\ndockerd = "dockerd-not-installed"\n'), 4,
     "dockerd-not-installed not found"),
], ids=["config-syntax-error", "dockerd-missing"])
def test_login_survives_a_broken_setup(harness, sshd, break_it, code, words):
    user = new_user(harness, sshd)
    with broken_config(harness, break_it):
        r = interactive_login(sshd, user, f"echo still-$((1+{code}))-here; exit {code}\n")
    assert r.returncode == code, "the exit code is the command's own"
    assert f"still-{code + 1}-here" in r.stdout
    lines = berth_lines(r)
    assert len(lines) == 1 and words in lines[0], r.stdout + r.stderr
    assert not os.path.exists(harness.sock(user))


HOST_PATHS = ("/etc/pam.d", "/etc/berth", "/etc/profile.d", "/etc/cron.d", "/var/log/berth", "/usr/local/bin")


def snapshot(paths=HOST_PATHS):
    """Every file below `paths`: its mode, owner and content hash (links: their target)."""
    import hashlib
    seen = {}
    for top in paths:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    what = "-> " + os.readlink(path)
                elif os.path.isfile(path):
                    with open(path, "rb") as f:
                        what = hashlib.sha256(f.read()).hexdigest()
                else:
                    what = "dir"
                seen[path] = (st.st_mode, st.st_uid, st.st_gid, what)
    return seen


def test_a_login_test_leaves_the_hosts_files_as_they_were(harness):
    from conftest import Sshd
    before = snapshot()
    server = Sshd(harness)
    try:
        user = new_user(harness, server)
        r = server.ssh(user, DEBIAN_CLI, "info", "--format", "{{.Name}}")
        assert r.returncode == 0, r.stderr
        harness.berth("down", user)
    finally:
        server.close()
    assert snapshot() == before
