"""Rules that name a daemon's cgroup are written again whenever that cgroup was made again:
the kernel resolves a rule's cgroup path once, when the rule is added."""

import os
from collections import namedtuple

import pytest

from berth.core import config
from berth.daemon import cgroups
from berth.lifecycle import hostobjects as host

Lease = namedtuple("Lease", "uid block")


class FakeFirewall:
    def __init__(self, with_rules=()):
        self.calls, self.with_rules = [], set(with_rules)

    def ensure_user(self, name, planned, force=False):
        self.calls.append(("ensure", name, force))
        self.with_rules.add(name)
        return True

    def rewrite(self, plans):
        self.calls.append(("rewrite", tuple(sorted(plans))))
        return sorted(plans)

    def users_with_rules(self):
        return set(self.with_rules)


@pytest.fixture
def root(tmp_path):
    try:
        os.setxattr(tmp_path, cgroups.MARK, b"1")
    except OSError as e:
        pytest.skip(f"no trusted xattrs here ({e.strerror})")
    os.removexattr(tmp_path, cgroups.MARK)
    return str(tmp_path)


def cfg():
    return config.parse({"network": {"pool": "10.213.0.0/16"}, "daemon": {"supervisor": "direct"}})


def test_a_cgroup_made_again_gets_its_rules_written_again(root):
    leases = {"alice": Lease(1001, "10.213.1.0/24"), "bob": Lease(1002, "10.213.2.0/24"),
              "carol": Lease(1003, "10.213.3.0/24")}
    fw = FakeFirewall(with_rules={"bob"})  # bob is up; carol is not
    host.ensure_user_rules(cfg(), fw, "alice", "10.213.1.0/24", 1001, leases, root)
    # the cgroup above every daemon was new: every rule naming it is written again (bob's), alice's too
    assert fw.calls == [("rewrite", ("bob",)), ("ensure", "alice", True)]
    assert os.path.isdir(os.path.join(root, "berth-dockerd", "bob"))
    assert not os.path.exists(os.path.join(root, "berth-dockerd", "carol"))
    fw.calls.clear()
    host.ensure_user_rules(cfg(), fw, "alice", "10.213.1.0/24", 1001, leases, root)
    assert fw.calls == [("ensure", "alice", False)]  # as they were: only what differs changes
    fw.calls.clear()
    os.rmdir(os.path.join(root, "berth-dockerd", "alice"))  # what a systemd unit's stop does
    host.ensure_user_rules(cfg(), fw, "alice", "10.213.1.0/24", 1001, leases, root)
    assert fw.calls == [("ensure", "alice", True)]


def test_rules_name_the_daemons_cgroups():
    rules = host.user_rules(cfg(), "alice", "10.213.1.0/24", 1001, root="/sys/fs/cgroup/unified")
    assert {r.cgroup for r in rules if r.cgroup} == {"berth-dockerd/alice", "berth-dockerd"}
    assert cgroups.daemon_cgroups("alice", "berth-dockerd-alice.service") == (
        "berthd.slice/berth-dockerd-alice.service", "berthd.slice")
