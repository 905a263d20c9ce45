"""Two users up at once on real daemons: the seed's whole idea, checked."""

import ipaddress
import json
import os
import subprocess

import pytest
from conftest import DEBIAN_CLI


@pytest.fixture(scope="module")
def pair(harness):
    alice, bob = harness.add_user(), harness.add_user()
    for user in (alice, bob):
        harness.berth("up", user)
        harness.import_busybox(user)
    return alice, bob


def status(harness, user):
    doc = json.loads(harness.berth("status", user, "--json").stdout)
    (row,) = doc["users"]
    return row


def serve(harness, user, page):
    """A busybox httpd on :8080 inside the user's net container's namespace. As PID 1 it ignores
    SIGTERM: dockerd stopping it at a down waits its stop timeout (10 s unless told) for nothing."""
    harness.docker(user, "run", "-d", "--stop-timeout", "1", "--name", "web", "--net=container:net", "bt-busybox:1",
                   "sh", "-c",
                   f"echo {page} > /www/index.html && exec httpd -f -p 8080 -h /www", cli=DEBIAN_CLI)


def fetch(harness, user, url, extra=()):
    # busybox's own `wget -T` crashes when built static, and `timeout` cannot
    # stop a PID 1; under a shell that stays PID 1 (`; exit`), it can.
    return harness.docker(user, "run", "--rm", *extra, "bt-busybox:1", "sh", "-c",
                          f"timeout 3 wget -qO- {url}; exit $?", check=False, timeout=30, cli=DEBIAN_CLI)


def test_two_daemons_two_distinct_blocks(harness, pair):
    alice, bob = pair
    a, b = status(harness, alice), status(harness, bob)
    assert a["state"] == b["state"] == "up"
    assert a["pid"] != b["pid"]
    assert harness.dockerd_pids(alice) == [a["pid"]]
    assert harness.dockerd_pids(bob) == [b["pid"]]
    ba, bb = ipaddress.ip_network(a["block"]), ipaddress.ip_network(b["block"])
    assert not ba.overlaps(bb)
    assert ba.subnet_of(harness.pool) and bb.subnet_of(harness.pool)
    assert ipaddress.ip_address(a["net_ip"]) in ba
    assert ipaddress.ip_address(b["net_ip"]) in bb
    assert a["bridge_present"] and b["bridge_present"]


def test_same_port_in_both_namespaces_each_with_its_own_page(harness, pair):
    alice, bob = pair
    serve(harness, alice, f"page-of-{alice}")
    serve(harness, bob, f"page-of-{bob}")
    for user in pair:
        r = harness.docker(user, "run", "--rm", "--net=container:net", "bt-busybox:1",
                           "sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- 127.0.0.1:8080 && exit 0; "
                           "sleep 0.3; done; exit 1", cli=DEBIAN_CLI)
        assert r.stdout.strip() == f"page-of-{user}"


def test_socket_is_the_users_alone(harness, pair):
    alice, bob = pair
    ok = harness.docker(alice, "ps", "--format", "{{.Names}}", as_user=alice, cli=DEBIAN_CLI)
    assert "net" in ok.stdout.split()
    denied = harness.docker(alice, "ps", as_user=bob, check=False, cli=DEBIAN_CLI)
    assert denied.returncode != 0
    assert "permission denied" in denied.stderr.lower()


def test_containers_cannot_reach_another_users_net_container(harness, pair):
    alice, bob = pair
    own_ip, other_ip = status(harness, alice)["net_ip"], status(harness, bob)["net_ip"]
    # The host reaches bob's server: only berth's rule stands in the way.
    host = subprocess.run(["timeout", "3", "/bin/busybox", "wget", "-qO-", f"http://{other_ip}:8080"],
                          capture_output=True, text=True)
    assert host.stdout.strip() == f"page-of-{bob}"
    mine = fetch(harness, alice, f"http://{own_ip}:8080")
    assert mine.returncode == 0 and mine.stdout.strip() == f"page-of-{alice}"
    theirs = fetch(harness, alice, f"http://{other_ip}:8080")
    assert theirs.returncode != 0 and f"page-of-{bob}" not in theirs.stdout
    drops = [line for line in harness.rules_mentioning(f"berth:{alice}") if "-j DROP" in line]
    assert drops, "alice has an isolation rule"


def test_network_create_gets_disjoint_subnets_inside_each_block(harness, pair):
    subnets = {}
    for user in pair:
        harness.docker(user, "network", "create", "bt-net", cli=DEBIAN_CLI)
        out = harness.docker(user, "network", "inspect", "bt-net", "--format",
                             "{{range .IPAM.Config}}{{.Subnet}}{{end}}", cli=DEBIAN_CLI).stdout.strip()
        subnets[user] = ipaddress.ip_network(out)
        block = ipaddress.ip_network(status(harness, user)["block"])
        assert subnets[user].subnet_of(block)
        harness.docker(user, "network", "rm", "bt-net", cli=DEBIAN_CLI)
    a, b = subnets.values()
    assert not a.overlaps(b)


def test_status_table_lists_both(harness, pair):
    out = harness.berth("status").stdout
    for user in pair:
        assert any(line.split()[:1] == [user] and " up " in line for line in out.splitlines())


def test_runtime_and_state_files_are_root_owned(harness, pair):
    import os
    import stat
    alice = pair[0]
    run_dir = f"{harness.root}/run/{alice}"
    for path in (run_dir, f"{run_dir}/daemon.json", f"{run_dir}/docker.pid", f"{run_dir}/dockerd.rec",
                 f"{harness.root}/state", f"{harness.root}/state/leases.json",
                 f"{harness.root}/state/users/{alice}"):
        st = os.stat(path)
        assert st.st_uid == 0, path
        assert not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    st = os.stat(harness.sock(alice))
    assert stat.S_IMODE(st.st_mode) == 0o600
    import pwd
    assert st.st_uid == pwd.getpwnam(alice).pw_uid


def test_down_of_both_leaves_no_process_bridge_or_rule(harness, pair):
    for user in pair:
        r = harness.berth("down", user)
        assert "dockerd stopped" in r.stdout
        assert harness.dockerd_pids(user) == []
    # Only the host's policy proxy and shared containerd stay (services, like cron), serving nobody.
    from berth.proxy import control as proxyctl
    info = proxyctl.ping(f"{harness.root}/run")
    assert info is not None and info["users"] == 0 and proxyctl.stats(f"{harness.root}/run") == {}
    assert sorted(harness.leftover_processes()) == sorted([info["pid"], harness.shared_containerd_pid()])
    for user in pair:
        assert not os.path.exists(harness.sock(user))
    assert harness.bridges() == []
    # berth's chains and their jumps go with the last user
    assert harness.rules_mentioning(harness.chain_prefix) == []
    for user in pair:
        assert harness.rules_mentioning(f"berth:{user}") == []
