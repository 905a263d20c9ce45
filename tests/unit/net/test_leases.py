import ipaddress
import json
import multiprocessing
import os

import pytest

from berth.core.errors import LeaseFileCorrupt, NotTrusted, SubnetsExhausted
from berth.net.leases import LeaseTable

POOL = ipaddress.IPv4Network("10.213.0.0/16")


def no_host_networks():
    return []


def test_same_user_gets_same_block_across_instances(tmp_path):
    a = LeaseTable(str(tmp_path)).acquire("alice", 1001, POOL, 24, no_host_networks, now=5.0)
    b = LeaseTable(str(tmp_path)).acquire("alice", 1001, POOL, 24, no_host_networks)
    assert a == b
    assert a.block == ipaddress.IPv4Network("10.213.0.0/24")
    assert a.since == 5.0


def test_distinct_users_distinct_blocks_and_host_networks_skipped(tmp_path):
    t = LeaseTable(str(tmp_path))
    a = t.acquire("alice", 1001, POOL, 24, lambda: [ipaddress.IPv4Network("10.213.0.0/23")])
    b = t.acquire("bob", 1002, POOL, 24, lambda: [])
    assert a.block == ipaddress.IPv4Network("10.213.2.0/24")
    assert b.block == ipaddress.IPv4Network("10.213.0.0/24")


def test_host_networks_only_read_when_allocating(tmp_path):
    t = LeaseTable(str(tmp_path))
    t.acquire("alice", 1001, POOL, 24, no_host_networks)

    def boom():
        raise AssertionError("host networks read for an existing lease")
    t.acquire("alice", 1001, POOL, 24, boom)


def test_exhausted_pool(tmp_path):
    t = LeaseTable(str(tmp_path))
    pool = ipaddress.IPv4Network("10.0.0.0/24")
    t.acquire("a", 1, pool, 25, no_host_networks)
    t.acquire("b", 2, pool, 25, no_host_networks)
    with pytest.raises(SubnetsExhausted) as e:
        t.acquire("c", 3, pool, 25, no_host_networks)
    assert "no free /25 left in 10.0.0.0/24" in e.value.one_line()
    assert "[network].pool" in e.value.one_line()


def test_release_frees_the_block(tmp_path):
    t = LeaseTable(str(tmp_path))
    t.acquire("a", 1, POOL, 24, no_host_networks)
    assert t.release("a") is True
    assert t.release("a") is False
    assert t.read() == {}


def test_file_is_written_atomically_as_json(tmp_path):
    t = LeaseTable(str(tmp_path))
    t.acquire("alice", 1001, POOL, 24, no_host_networks)
    doc = json.loads((tmp_path / "leases.json").read_text())
    assert doc["version"] == 1
    assert doc["leases"]["alice"]["block"] == "10.213.0.0/24"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.parametrize("content", ["{not json", '{"version": 1}', '{"version": 9, "leases": {}}',
                                     '{"version": 1, "leases": {"a": {"uid": 1, "block": "banana", "since": 0}}}'])
def test_corrupt_file_is_never_overwritten(tmp_path, content):
    path = tmp_path / "leases.json"
    path.write_text(content)
    t = LeaseTable(str(tmp_path))
    with pytest.raises(LeaseFileCorrupt) as e:
        t.acquire("alice", 1001, POOL, 24, no_host_networks)
    assert str(path) in e.value.one_line()
    assert path.read_text() == content


def test_a_writable_lease_file_is_not_trusted(tmp_path):
    t = LeaseTable(str(tmp_path))
    t.acquire("alice", 1001, POOL, 24, no_host_networks)
    os.chmod(tmp_path / "leases.json", 0o666)
    with pytest.raises(NotTrusted) as e:
        t.read()
    assert "leases.json" in e.value.one_line()


def _allocate(state_dir, user, barrier, results):
    barrier.wait()
    lease = LeaseTable(state_dir).acquire(user, 2000, POOL, 24, no_host_networks)
    results.put((user, str(lease.block)))


def test_sixteen_processes_allocating_at_once_never_share_a_block(tmp_path):
    ctx = multiprocessing.get_context("fork")
    n = 16
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_allocate, args=(str(tmp_path), f"user{i}", barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=60) for _ in range(n))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(got) == n
    assert len(set(got.values())) == n, "a block was handed out twice"
    table = LeaseTable(str(tmp_path)).read()
    assert {u: str(lease.block) for u, lease in table.items()} == got
