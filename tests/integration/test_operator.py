"""What an admin meets first: the demo, status, and errors a person can act on."""

import json
import os
import subprocess


def one_line(r):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_demo_runs_end_to_end_and_leaves_nothing(harness):
    before_users = {line.split(":")[0] for line in open("/etc/passwd")}
    r = harness.berth("demo")
    out = r.stdout
    assert out.count("hello from demo") >= 4, out          # inside each namespace and from the host
    assert "permission denied" in out
    assert "cleaned up" in out
    assert {line.split(":")[0] for line in open("/etc/passwd")} == before_users
    assert harness.bridges() == []
    assert harness.rules_mentioning(harness.chain_prefix) == []
    assert harness.leftover_processes() == [harness.shared_containerd_pid()]  # the harness's, started before
    assert json.load(open(f"{harness.root}/state/leases.json"))["leases"] == {}
    assert os.listdir(f"{harness.root}/state/users") == []


def test_status_json_on_two_users(harness):
    a, b = harness.add_user(), harness.add_user()
    harness.berth("up", a)
    harness.berth("up", b)
    harness.berth("down", b)
    doc = json.loads(harness.berth("status", "--json").stdout)
    assert doc["schema"] == 1
    rows = {r["user"]: r for r in doc["users"]}
    assert rows[a]["state"] == "up" and rows[b]["state"] == "down"
    assert rows[a]["memory_bytes"] > 50 * 2**20 and rows[b]["memory_bytes"] == 0
    assert rows[a]["net_ip"] and rows[a]["containers_running"] == 1 and rows[a]["pid"] > 0
    assert rows[a]["block"] != rows[b]["block"]
    assert doc["summary"]["up"] == 1 and doc["summary"]["blocks_leased"] >= 2
    assert doc["summary"]["memory_bytes"] == rows[a]["memory_bytes"]
    # a user who is not root sees their own row only
    mine = subprocess.run(["runuser", "-u", b, "--", *harness_cmd(harness), "status", "--json"],
                          capture_output=True, text=True)
    assert [r["user"] for r in json.loads(mine.stdout)["users"]] == [b], mine.stderr
    harness.berth("down", a)


def harness_cmd(harness):
    return harness.user_berth()


def test_not_root(harness):
    user = harness.add_user()
    r = subprocess.run(["runuser", "-u", user, "--", *harness_cmd(harness), "up", user], capture_output=True, text=True)
    line = one_line(r)
    assert "needs root" in line and "sudo" in line


def test_bridge_name_taken(harness):
    user = harness.add_user()
    import pwd
    name = f"{harness.bridge_prefix}{pwd.getpwnam(user).pw_uid}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"], check=True)
    try:
        line = one_line(harness.berth("up", user, check=False))
        assert f"{name} exists and is not a bridge" in line and f"ip link del {name}" in line
        assert harness.dockerd_pids(user) == [] and harness.rules_mentioning(f"berth:{user}") == []
    finally:
        subprocess.run(["ip", "link", "del", name], check=True)


def test_pool_exhausted(harness):
    pool = list(harness.pool.subnets(new_prefix=23))[-1]
    cfg = harness.write_config("tiny-pool.toml")
    text = open(cfg).read().replace(f'pool = "{harness.pool}"', f'pool = "{pool}"')
    text = text.replace(f'state_dir = "{harness.root}/state"', f'state_dir = "{harness.root}/state-tiny"')
    with open(cfg, "w") as f:
        f.write(text)
    users = [harness.add_user() for _ in range(3)]
    from berth.net.leases import LeaseTable
    table = LeaseTable(f"{harness.root}/state-tiny")
    for u in users[:2]:  # fill both blocks without starting daemons
        table.acquire(u, 5000, pool, 24, lambda: [])
    line = one_line(harness.berth("up", users[2], config=cfg, check=False))
    assert f"no free /24 left in {pool}" in line and "[network].pool" in line


def test_disk_full_while_writing_leases(harness):
    state = f"{harness.root}/state-full"
    os.makedirs(state)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", state], check=True)
    try:
        with open(f"{state}/filler", "wb") as f:
            try:
                f.write(b"x" * 200_000)
            except OSError:
                pass
        cfg = harness.write_config("full.toml")
        text = open(cfg).read().replace(f'state_dir = "{harness.root}/state"', f'state_dir = "{state}"')
        with open(cfg, "w") as f:
            f.write(text)
        user = harness.add_user()
        line = one_line(harness.berth("up", user, config=cfg, check=False))
        assert "leases.json" in line and "No space left" in line and "free some space" in line
        assert harness.dockerd_pids(user) == [] and harness.rules_mentioning(f"berth:{user}") == []
    finally:
        subprocess.run(["umount", state], check=True)


def test_invalid_config(harness):
    cfg = os.path.join(harness.root, "invalid.toml")
    with open(cfg, "w") as f:
        f.write('[network]\nblock_prefix = "24"\n')
    line = one_line(harness.berth("status", config=cfg, check=False))
    assert "[network].block_prefix" in line and "integer" in line
