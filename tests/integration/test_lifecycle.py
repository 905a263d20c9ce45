"""down/up cycles, crashes, concurrency and failures on real daemons."""

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import DEBIAN_CLI


def block_of(harness, user, config=None):
    doc = json.loads(harness.berth("status", user, "--json", config=config).stdout)
    return doc["users"][0]["block"]


def assert_nothing_left(harness, user):
    assert harness.dockerd_pids(user) == []
    assert harness.processes_of(user) == []
    assert not [b for b in harness.bridges() if b.endswith(str(__import__("pwd").getpwnam(user).pw_uid))]
    assert harness.rules_mentioning(f"berth:{user}") == []
    assert not os.path.exists(harness.sock(user))
    from berth.daemon import cgroups
    if cgroups.v2_root():  # nothing of the daemon's left running where it ran
        procs = os.path.join(cgroups.v2_root(), cgroups.DAEMONS, user, "cgroup.procs")
        assert not os.path.exists(procs) or open(procs).read() == "", open(procs).read()


def test_data_and_block_survive_down_and_up(harness):
    user = harness.add_user()
    harness.berth("up", user)
    block = block_of(harness, user)
    image = harness.import_busybox(user)
    harness.docker(user, "volume", "create", "keep", cli=DEBIAN_CLI)
    harness.docker(user, "run", "-v", "keep:/data", "--name", "stopped", image, "sh", "-c", "echo kept > /data/f",
                   cli=DEBIAN_CLI)

    r = harness.berth("down", user)
    assert "is down" in r.stdout
    assert_nothing_left(harness, user)

    harness.berth("up", user)
    assert block_of(harness, user) == block
    assert image in harness.docker(user, "images", "--format", "{{.Repository}}:{{.Tag}}",
                                   cli=DEBIAN_CLI).stdout.split()
    out = harness.docker(user, "run", "--rm", "-v", "keep:/data", image, "cat", "/data/f", cli=DEBIAN_CLI).stdout
    assert out.strip() == "kept"
    assert "stopped" in harness.docker(user, "ps", "-a", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    # the net container came back by itself and is the same container
    assert "net" in harness.docker(user, "ps", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_up_twice_is_a_cheap_no_op(harness):
    user = harness.add_user()
    harness.berth("up", user)
    pid = harness.dockerd_pids(user)
    r = harness.berth("up", user)
    assert "already running" in r.stdout
    assert harness.dockerd_pids(user) == pid
    harness.berth("down", user)
    r = harness.berth("down", user)
    assert "was not running" in r.stdout


def test_five_concurrent_ups_give_one_daemon(harness):
    user = harness.add_user()
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: harness.berth("up", user, check=False), range(5)))
    assert [r.returncode for r in results] == [0] * 5, [r.stderr for r in results]
    assert sum("started in" in r.stdout for r in results) == 1
    assert len(harness.dockerd_pids(user)) == 1
    harness.berth("down", user)


def test_crashed_daemon_comes_back(harness):
    """SIGKILL leaves a pidfile, a socket and an orphaned containerd behind."""
    user = harness.add_user()
    harness.berth("up", user)
    harness.crash_daemon(user)
    assert os.path.exists(f"{harness.root}/run/{user}/docker.pid")
    st = json.loads(harness.berth("status", user, "--json").stdout)["users"][0]
    assert st["state"] == "dead"
    r = harness.berth("up", user)
    assert "started in" in r.stdout
    assert len(harness.dockerd_pids(user)) == 1
    assert "net" in harness.docker(user, "ps", "--format", "{{.Names}}", cli=DEBIAN_CLI).stdout.split()
    harness.berth("down", user)
    assert_nothing_left(harness, user)


def test_rules_wiped_by_a_firewall_reload_are_put_back(harness):
    user = harness.add_user()
    harness.berth("up", user)
    before = harness.rules_mentioning(f"berth:{user}")
    harness.wipe_rules()
    assert harness.rules_mentioning(f"berth:{user}") == []
    harness.berth("up", user)
    assert harness.rules_mentioning(f"berth:{user}") == before
    harness.berth("down", user)


def _fake_dockerd(harness, name, body):
    path = os.path.join(harness.root, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


@pytest.mark.parametrize("body, words", [
    ("echo 'failed to start daemon: pretend the disk is gone' >&2; exit 1", "pretend the disk is gone"),
    # hangs as dockerd would, its command line (what berth knows its daemon by) kept
    ("echo 'hanging on purpose'; exec /usr/bin/python3 -c 'import time; time.sleep(600)' \"$0\" \"$@\"",
     "did not answer"),
], ids=["exits-at-start", "hangs"])
def test_failed_up_leaves_nothing_behind(harness, body, words):
    user = harness.add_user()
    fake = _fake_dockerd(harness, f"dockerd-{len(harness.users)}", body)
    cfg = harness.write_config(f"broken-{len(harness.users)}.toml", dockerd=fake, start_timeout=2, stop_timeout=2)
    r = harness.berth("up", user, config=cfg, check=False)
    assert r.returncode == 1
    assert words in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert_nothing_left(harness, user)
    assert not [p for p in harness.leftover_processes() if fake in open(f"/proc/{p}/cmdline").read()]


def test_gpu_style_wrapper_runtime_through_daemon_json(harness):
    """How nvidia-container-runtime plugs in: a runtime registered in
    [daemon_json] as default-runtime wraps runc for every container."""
    user = harness.add_user()
    calls = os.path.join(harness.root, "runtime-calls")
    wrapper = os.path.join(harness.root, "wrapped-runtime")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\necho "$@" >> {calls}\nexec runc "$@"\n')
    os.chmod(wrapper, 0o755)
    cfg = harness.write_config("gpu.toml", f'[daemon_json]\ndefault-runtime = "bt-wrapped"\n'
                                           f'[daemon_json.runtimes.bt-wrapped]\npath = "{wrapper}"\n')
    harness.berth("up", user, config=cfg)
    image = harness.import_busybox(user)
    out = harness.docker(user, "run", "--rm", image, "echo", "ran-through-wrapper", cli=DEBIAN_CLI).stdout
    assert out.strip() == "ran-through-wrapper"
    info = harness.docker(user, "info", "--format", "{{.DefaultRuntime}}", cli=DEBIAN_CLI).stdout.strip()
    assert info == "bt-wrapped"
    with open(calls) as f:
        logged = f.read()
    assert "create" in logged and "--bundle" in logged
    harness.berth("down", user, config=cfg)
    assert_nothing_left(harness, user)


def test_new_blocks_skip_networks_the_host_already_uses(harness):
    """The allocator reads the host's addresses and routes (pyroute2) and
    never hands out a block that overlaps one."""
    import ipaddress

    from berth.net import bridge
    pool = list(harness.pool.subnets(new_prefix=22))[-1]   # 4 blocks of our own
    cfg = harness.write_config("skip.toml")
    text = open(cfg).read().replace(f'pool = "{harness.pool}"', f'pool = "{pool}"')
    text = text.replace(f'state_dir = "{harness.root}/state"', f'state_dir = "{harness.root}/state-skip"')
    with open(cfg, "w") as f:
        f.write(text)
    first = list(pool.subnets(new_prefix=24))[0]
    squatter = f"{harness.bridge_prefix}sq"
    subprocess.run(["ip", "link", "add", squatter, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{first[10]}/24", "dev", squatter], check=True)
        user = harness.add_user()
        harness.berth("up", user, config=cfg)
        block = ipaddress.ip_network(block_of(harness, user, config=cfg))
        assert block.subnet_of(pool) and not block.overlaps(first)
        harness.berth("down", user, config=cfg)
    finally:
        bridge.remove_bridge(squatter)


def test_a_daemon_that_serves_the_users_socket_itself_is_restarted(harness):
    """An upgrade guard: a dockerd with no socket of berth's own was started
    by a berth that gave the user dockerd's own socket (the way round the
    policy proxy); the next `up` restarts it."""
    from berth.core import paths

    user = harness.add_user()
    harness.berth("up", user)
    (pid,) = harness.dockerd_pids(user)
    engine = paths.for_user(harness.cfg(), user).engine_socket
    os.unlink(engine)  # as such a berth left it
    harness.berth("up", user)
    assert harness.dockerd_pids(user) not in ([pid], []) and os.path.exists(engine)
    harness.berth("down", user)
