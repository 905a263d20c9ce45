"""One containerd for every user's dockerd, on real daemons: users stay
apart on it, and it comes back after a crash with everyone's containers."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def pair(harness):
    alice, bob = harness.add_user(), harness.add_user()
    for user in (alice, bob):
        harness.berth("up", user)
        harness.import_busybox(user)
    return alice, bob


def shared(harness):
    from berth.lifecycle import hostobjects as host
    return host.shared_containerd(harness.cfg())


def ctr(harness, *args):
    r = subprocess.run(["ctr", "--address", shared(harness).address(), *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def namespace(harness, user):
    import pwd

    from berth.daemon import containerd
    return containerd.namespaces(user, pwd.getpwnam(user).pw_uid)[0]


def started_at(harness, user, name):
    return harness.docker(user, "inspect", "-f", "{{.State.StartedAt}} {{.State.Pid}}", name,
                          cli=DEBIAN_CLI).stdout.strip()


def kill_containerd(harness):
    from berth.daemon import engine
    rec = shared(harness).running()
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    for _ in range(100):
        # its threads exit one by one: the socket refuses once the last has
        if shared(harness).running() is None and not engine.listens(shared(harness).address()):
            return rec.pid
        time.sleep(0.05)
    raise AssertionError("the shared containerd survived SIGKILL")


def test_both_daemons_run_on_one_containerd_and_no_containerd_of_their_own(harness, pair):
    from berth.core import proc
    address = shared(harness).address()
    containerds = [p for p in proc.pids() if proc.comm(p) == "containerd"
                   and any(harness.root in a for a in proc.cmdline(p))]
    assert len(containerds) == 1  # berth's, for both users
    for user in pair:
        doc = json.load(open(f"{harness.root}/run/{user}/daemon.json"))
        assert doc["containerd"] == address and doc["containerd-namespace"] == namespace(harness, user)
    status = json.loads(harness.berth("status", "--json").stdout)
    assert status["containerd"]["state"] == "up" and status["containerd"]["pid"] == containerds[0]
    assert {r["user"] for r in status["users"] if r["containerd"] == address} >= set(pair)
    assert "shared containerd: pid" in harness.berth("status").stdout


def test_containers_images_and_networks_stay_apart(harness, pair):
    alice, bob = pair
    harness.docker(alice, "run", "-d", "--name", "only-alice", "bt-busybox:1", "sleep", "600", cli=DEBIAN_CLI)
    harness.docker(alice, "network", "create", "alice-net", cli=DEBIAN_CLI)
    harness.docker(alice, "tag", "bt-busybox:1", "alice-only:1", cli=DEBIAN_CLI)
    try:
        assert "only-alice" in harness.docker(alice, "ps", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
        assert "only-alice" not in harness.docker(bob, "ps", "-a", "--format", "{{.Names}}",
                                                  cli=DEBIAN_CLI).stdout.split()
        assert "alice-only:1" not in harness.docker(bob, "images", "--format", "{{.Repository}}:{{.Tag}}",
                                                    cli=DEBIAN_CLI).stdout
        assert "alice-net" not in harness.docker(bob, "network", "ls", "--format", "{{.Name}}",
                                                 cli=DEBIAN_CLI).stdout.split()
        # in containerd: each daemon's containers in its own namespace, and only there
        ns_a, ns_b = namespace(harness, alice), namespace(harness, bob)
        assert {ns_a, ns_b} <= set(ctr(harness, "namespaces", "ls", "-q"))
        full_id = harness.docker(alice, "inspect", "-f", "{{.Id}}", "only-alice", cli=DEBIAN_CLI).stdout.strip()
        assert full_id in ctr(harness, "-n", ns_a, "containers", "ls", "-q")
        assert full_id not in ctr(harness, "-n", ns_b, "containers", "ls", "-q")
    finally:
        harness.docker(alice, "rm", "-f", "only-alice", check=False, cli=DEBIAN_CLI)
        harness.docker(alice, "network", "rm", "alice-net", check=False, cli=DEBIAN_CLI)


def test_a_killed_containerd_is_back_at_the_next_up_with_every_container_running(harness, pair):
    from berth.login import warm
    alice, bob = pair
    for user in pair:
        harness.docker(user, "run", "-d", "--name", "survivor", "bt-busybox:1", "sleep", "600", cli=DEBIAN_CLI)
    try:
        before = {user: started_at(harness, user, "survivor") for user in pair}
        old = kill_containerd(harness)
        # the login check sees it: a login takes the slow path, which starts it
        assert not warm.is_up(f"{harness.root}/run", alice)
        assert "NOT RUNNING" in harness.berth("status").stdout
        harness.berth("up", alice)
        rec = shared(harness).running()
        assert rec is not None and rec.pid != old
        assert warm.is_up(f"{harness.root}/run", alice) and warm.is_up(f"{harness.root}/run", bob)
        for user in pair:  # never restarted, still listed, and managed again
            assert started_at(harness, user, "survivor") == before[user]
            assert "survivor" in harness.docker(user, "ps", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
            assert harness.docker(user, "exec", "survivor", "sh", "-c", "echo alive",
                                  cli=DEBIAN_CLI).stdout.strip() == "alive"
        assert harness.docker(bob, "run", "--rm", "bt-busybox:1", "sh", "-c", "echo new",
                              cli=DEBIAN_CLI).stdout.strip() == "new"
    finally:
        for user in pair:
            harness.docker(user, "rm", "-f", "survivor", check=False, cli=DEBIAN_CLI)


def test_the_reaper_pass_restarts_a_dead_containerd(harness, pair):
    alice, _ = pair
    kill_containerd(harness)
    out = harness.berth("reap").stdout
    assert "shared containerd" in out and "started again" in out
    assert shared(harness).running() is not None
    assert harness.docker(alice, "run", "--rm", "bt-busybox:1", "true", cli=DEBIAN_CLI).returncode == 0


def test_a_user_reaped_and_back_while_anothers_container_keeps_running(harness, pair):
    alice, bob = pair
    reap0 = harness.write_config("shared-reap0.toml", extra="[reaper]\nidle_timeout = 0\n")
    harness.docker(bob, "run", "-d", "--name", "steady", "bt-busybox:1", "sleep", "600", cli=DEBIAN_CLI)
    try:
        before = started_at(harness, bob, "steady")
        out = harness.berth("reap", "--user", alice, config=reap0).stdout
        assert f"{alice} reaped" in out
        assert not harness.dockerd_pids(alice)
        assert started_at(harness, bob, "steady") == before
        harness.berth("up", alice)
        assert harness.docker(alice, "run", "--rm", "bt-busybox:1", "true", cli=DEBIAN_CLI).returncode == 0
        assert started_at(harness, bob, "steady") == before
        assert "steady" in harness.docker(bob, "ps", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    finally:
        harness.docker(bob, "rm", "-f", "steady", check=False, cli=DEBIAN_CLI)


def test_a_purged_users_namespaces_go_from_containerd(harness):
    user = harness.add_user()
    harness.berth("up", user)
    ns = namespace(harness, user)
    assert ns in ctr(harness, "namespaces", "ls", "-q")
    harness.berth("down", "--purge", "--yes", user)
    assert ns not in ctr(harness, "namespaces", "ls", "-q")
    assert not any(n.startswith(f"{user}.") for n in os.listdir(f"{harness.root}/run"))
