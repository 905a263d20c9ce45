"""Each user's share on real daemons: one cgroup above all of a user's
containers holds them to the user's limits together, and nobody else's."""

import os
import time

import pytest
from conftest import DEBIAN_CLI

from berth.daemon import cgroups

MEMORY = 96 << 20


@pytest.fixture(scope="module")
def pair(harness):
    a, b = harness.add_user(), harness.add_user()
    cfg = harness.write_config("limits.toml", extra=f'[limits]\nmemory = "1G"\ncpu_weight = 100\n'
                                                    f'[limits.users.{a}]\nmemory = "{MEMORY}"\n'
                                                    f'[limits.users.{b}]\ncpu_weight = 300\n')
    for user in (a, b):
        harness.berth("up", user, config=cfg)
        harness.import_busybox(user)
    return a, b, cfg


def v1(controller, user, name):
    with open(f"/sys/fs/cgroup/{controller}/berth/{user}/{name}") as f:
        return f.read()


def started(harness, user, name):
    return harness.docker(user, "inspect", "-f", "{{.State.Status}} {{.State.StartedAt}}", name,
                          cli=DEBIAN_CLI).stdout.strip()


def hits(user):
    """How often the user's cgroup ran into its memory limit (v1 counts the
    OOM kill itself in the container's own cgroup, below)."""
    return int(v1("memory", user, "memory.failcnt"))


def kills_in(harness, user, name):
    """OOM kills in one container's own cgroup (v1 counts them where the victim was)."""
    cid = harness.docker(user, "inspect", "-f", "{{.Id}}", name, cli=DEBIAN_CLI).stdout.strip()
    fields = dict(line.split() for line in v1("memory", user, f"{cid}/memory.oom_control").splitlines())
    return int(fields.get("oom_kill", 0))


def usage_of(harness, user, name):
    cid = harness.docker(user, "inspect", "-f", "{{.Id}}", name, cli=DEBIAN_CLI).stdout.strip()
    return int(v1("memory", user, f"{cid}/memory.usage_in_bytes"))


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def oom_killed(harness, user, name):
    return harness.docker(user, "inspect", "-f", "{{.State.OOMKilled}}", name, cli=DEBIAN_CLI).stdout.strip() == "true"


pytestmark = pytest.mark.skipif(cgroups.version() != 1, reason="this machine's kind has cgroup v1")


def test_every_container_of_a_user_is_below_their_cgroup_with_their_limits(harness, pair):
    a, b, _ = pair
    assert int(v1("memory", a, "memory.limit_in_bytes")) == MEMORY
    assert int(v1("memory", b, "memory.limit_in_bytes")) == 1 << 30
    assert v1("cpu", b, "cpu.shares").strip() == "3072" and v1("cpu", a, "cpu.shares").strip() == "1024"
    import json
    (row,) = json.loads(harness.berth("status", a, "--json", config=pair[2]).stdout)["users"]
    assert row["memory_limit_bytes"] == MEMORY  # what the cgroup file says
    (line,) = [x for x in harness.berth("status", a, config=pair[2]).stdout.splitlines()
               if x.startswith("memory limit")]
    assert line.split()[-2:] == ["96", "MiB"]
    net = harness.docker(a, "inspect", "-f", "{{.Id}}", "net", cli=DEBIAN_CLI).stdout.strip()
    assert os.path.isdir(f"/sys/fs/cgroup/memory/berth/{a}/{net}")  # the net container, under a's cgroup


def test_a_container_past_its_users_memory_is_killed_and_the_other_users_keeps_running(harness, pair):
    a, b, _ = pair
    harness.docker(b, "run", "-d", "--name", "steady", "bt-busybox:1", "sleep", "600", cli=DEBIAN_CLI)
    try:
        before, limit_hits = started(harness, b, "steady"), hits(a)
        # 200 MiB in one buffer, in a container with no -m of its own: past a's 96 MiB
        r = harness.docker(a, "run", "--name", "hog", "bt-busybox:1", "busybox", "dd", "if=/dev/zero", "of=/dev/null",
                           "bs=200M", "count=1", check=False, cli=DEBIAN_CLI)
        assert r.returncode == 137, (r.returncode, r.stderr)
        assert oom_killed(harness, a, "hog")  # `docker inspect` says so, as usual
        assert hits(a) > limit_hits  # and it was a's share that was full, not the container's (it has no -m)
        assert started(harness, b, "steady") == before  # b's container never noticed
    finally:
        harness.docker(a, "rm", "-f", "hog", check=False, cli=DEBIAN_CLI)
        harness.docker(b, "rm", "-f", "steady", check=False, cli=DEBIAN_CLI)


def test_a_users_own_memory_limit_still_works_inside_their_share(harness, pair):
    a, _, _ = pair
    limit_hits = hits(a)
    try:
        # 40 MiB in a container of its own -m 24m: its own limit, well inside a's 96 MiB, kills it
        r = harness.docker(a, "run", "--name", "own-m", "-m", "24m", "--memory-swap", "24m", "bt-busybox:1",
                           "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=40M", "count=1", check=False,
                           cli=DEBIAN_CLI)
        assert r.returncode == 137 and oom_killed(harness, a, "own-m")
        assert hits(a) == limit_hits  # a's share was never full
    finally:
        harness.docker(a, "rm", "-f", "own-m", check=False, cli=DEBIAN_CLI)


def test_two_containers_of_a_user_together_cannot_exceed_the_users_memory(harness, pair):
    a, _, _ = pair
    limit_hits = hits(a)
    hold = "busybox dd if=/dev/zero bs=60M count=1 | sleep 600"  # dd holds its 60 MiB, blocked on the pipe
    try:
        harness.docker(a, "run", "-d", "--name", "one", "bt-busybox:1", "sh", "-c", hold, cli=DEBIAN_CLI)
        wait_for(lambda: usage_of(harness, a, "one") >= 60 << 20)  # one's dd holds its 60 MiB
        harness.docker(a, "run", "-d", "--name", "two", "bt-busybox:1", "sh", "-c", hold, cli=DEBIAN_CLI)
        wait_for(lambda: any(kills_in(harness, a, n) for n in ("one", "two")))
        # 2 x 60 MiB does not fit in 96 MiB: a dd was killed (its shell and sleep go on), at a's limit. Which
        # one, and whether the kernel's OOM killer took a second before the first let go, is the kernel's.
        assert sum(kills_in(harness, a, n) for n in ("one", "two")) >= 1 and hits(a) > limit_hits
        assert int(v1("memory", a, "memory.max_usage_in_bytes")) <= MEMORY
    finally:
        harness.docker(a, "rm", "-f", "one", "two", check=False, cli=DEBIAN_CLI)


def test_weights_split_the_cpu_between_two_users_busy_loops(harness, pair):
    a, b, _ = pair
    loop = "while :; do :; done"
    try:
        for user in (a, b):
            for i in range(2):  # four busy loops on a 2-core box: contention
                harness.docker(user, "run", "-d", "--name", f"busy{i}", "bt-busybox:1", "sh", "-c", loop,
                               cli=DEBIAN_CLI)
        time.sleep(1)
        start = {u: int(v1("cpuacct", u, "cpuacct.usage")) for u in (a, b)}
        time.sleep(4)
        used = {u: int(v1("cpuacct", u, "cpuacct.usage")) - start[u] for u in (a, b)}
        ratio = used[b] / max(used[a], 1)
        assert 1.8 < ratio < 5, f"b (weight 300) got {ratio:.2f}x a's (weight 100) CPU"
    finally:
        for user in (a, b):
            harness.docker(user, "rm", "-f", "busy0", "busy1", check=False, cli=DEBIAN_CLI)


def test_a_changed_limit_applies_to_a_user_who_is_up_without_restarting_containers(harness, pair):
    a, _, _ = pair
    before = started(harness, a, "net")
    bigger = harness.write_config("limits-bigger.toml", extra=f'[limits.users.{a}]\nmemory = "128M"\n')
    harness.berth("up", a, config=bigger)
    assert int(v1("memory", a, "memory.limit_in_bytes")) == 128 << 20
    assert started(harness, a, "net") == before
    harness.berth("up", a, config=pair[2])
    assert int(v1("memory", a, "memory.limit_in_bytes")) == MEMORY


def test_no_cgroup_is_left_after_down_and_purge(harness):
    user = harness.add_user()
    harness.berth("up", user)
    assert os.path.isdir(f"/sys/fs/cgroup/memory/berth/{user}")
    harness.berth("down", user)
    assert cgroups.user_dirs(user) and not any(os.path.exists(d) for d in cgroups.user_dirs(user))
    harness.berth("up", user)
    harness.berth("down", "--purge", "--yes", user)
    assert not any(os.path.exists(d) for d in cgroups.user_dirs(user))


def test_status_and_top_say_what_the_cgroup_files_and_the_reaper_found(harness, pair):
    import json
    import subprocess
    a, b, cfg = pair
    harness.berth("reap", "--user", a, config=cfg)  # kept (not idle), and its data-root measured
    (row,) = json.loads(harness.berth("status", a, "--json", config=cfg).stdout)["users"]
    usage_now = int(v1("memory", a, "memory.usage_in_bytes"))
    assert row["memory_limit_bytes"] == MEMORY
    assert abs(row["cgroup_memory_bytes"] - usage_now) < 8 << 20
    assert row["cpu_percent"] is not None and row["cpu_percent"] >= 0
    du = int(subprocess.run(["du", "-sx", "--block-size=1", f"{harness.root}/state/users/{a}/docker"],
                            capture_output=True, text=True).stdout.split()[0])
    assert abs(row["disk_bytes"] - du) <= max(du // 20, 1 << 20)  # what du says, give or take what changed since
    assert row["gpu_processes"] is None  # no nvidia-smi on this machine: the column says so
    top = harness.berth("top", "-n", "1", "--sort", "memory", "--interval", "0.1", config=cfg).stdout
    header = next(line for line in top.splitlines() if line.startswith("USER"))
    assert header.split()[9:13] == ["CPU", "LIMIT", "DISK", "GPU"]
    assert "sorted by memory" in top and " n/a " in top
