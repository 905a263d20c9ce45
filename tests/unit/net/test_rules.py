from berth.core import config
from berth.net import rules

BLOCK = "10.213.3.0/24"


def cfg():
    return config.parse({"network": {"pool": "10.213.0.0/16", "chain_prefix": "BERTH", "bridge_prefix": "bth"}})


DAEMONS = rules.DaemonCgroups("berth-dockerd/alice", "berth-dockerd")


def plan(user="alice", block=BLOCK, uid=1001, daemons=None, ip6=True):
    return rules.plan_user_rules(cfg(), user, block, uid, daemons, ip6)


def test_every_rule_carries_the_users_comment_and_nat_is_masquerade():
    p = plan()
    assert all(r.comment == "berth:alice" for r in p)
    assert [r for r in p if r.table == "nat"] == [rules.Rule("nat", "BERTH-POSTROUTING", "MASQUERADE",
                                                             src=BLOCK, dst="!" + BLOCK, comment="berth:alice")]


def test_forwarded_isolation_is_by_destination():
    fwd = [(r.src, r.dst, r.ctstate, r.target) for r in plan() if r.chain == "BERTH-FORWARD"]
    own = fwd.index((BLOCK, BLOCK, "", "ACCEPT"))
    replies = fwd.index(("", BLOCK, "RELATED,ESTABLISHED", "ACCEPT"))
    # whatever the source claims, nothing else new gets in: other users, their networks anywhere, forgeries
    closed = fwd.index(("", BLOCK, "", "DROP"))
    out_to_pool = fwd.index((BLOCK, "10.213.0.0/16", "", "DROP"))
    out = fwd.index((BLOCK, "", "", "ACCEPT"))
    assert max(own, replies) < closed < out_to_pool < out


def test_host_processes_reach_the_block_only_as_root_or_the_user():
    out = [(r.owner, r.ctstate, r.target) for r in plan() if r.chain == "BERTH-OUTPUT" and not r.ip6]
    assert out == [("", "RELATED,ESTABLISHED", "ACCEPT"), ("0", "", "ACCEPT"), ("1001", "", "ACCEPT"),
                   ("", "", "DROP")]
    assert all(r.dst == BLOCK for r in plan() if r.chain == "BERTH-OUTPUT" and not r.ip6)


def test_the_users_own_daemon_gets_in_and_every_other_users_daemon_stays_out_before_root_is_let_in():
    """dockerd and docker-proxy run as root: the daemon's cgroup decides, ahead of the owner match."""
    for ip6 in (False, True):
        out = [(r.cgroup, r.owner, r.ctstate, r.target, r.out_iface) for r in plan(daemons=DAEMONS)
               if r.chain == "BERTH-OUTPUT" and r.ip6 == ip6 and not r.icmp6]
        for iface in ({""} if not ip6 else {"bth1001", "bth1001.+"}):
            mine = [o[:4] for o in out if o[4] == iface]
            assert mine == [("", "", "RELATED,ESTABLISHED", "ACCEPT"), ("berth-dockerd/alice", "", "", "ACCEPT"),
                            ("berth-dockerd", "", "", "DROP"), ("", "0", "", "ACCEPT"), ("", "1001", "", "ACCEPT"),
                            ("", "", "", "DROP")]
    assert not any(r.cgroup for r in plan())  # a host without cgroup2: as before


def test_ipv6_is_isolated_by_the_users_interfaces_link_local_included():
    six = [r for r in plan() if r.ip6]
    assert six and all(r.table == "filter" and not r.src and not r.dst for r in six)
    mine = {"bth1001", "bth1001.+"}
    fwd = [r for r in six if r.chain == "BERTH-FORWARD"]
    # within the user's own bridges (link-local is never routed); nothing else onto them
    assert [(r.in_iface, r.out_iface, r.target) for r in fwd] == [
        ("bth1001", "bth1001", "ACCEPT"), ("bth1001.+", "bth1001.+", "ACCEPT"),
        ("", "bth1001", "DROP"), ("", "bth1001.+", "DROP")]
    out = [r for r in six if r.chain == "BERTH-OUTPUT"]
    assert {r.out_iface for r in out} == mine and all(r.out_iface for r in out)
    # the kernel's neighbour discovery goes out (no user's process can send it)
    assert {(r.out_iface, r.icmp6) for r in out if r.icmp6 and r.target == "ACCEPT"} == \
        {(o, t) for o in mine for t in ("135", "136")}
    assert not [r for r in plan(ip6=False) if r.ip6]


def test_forged_sources_are_dropped_before_conntrack():
    raw = [r for r in plan() if r.table == "raw"]
    assert all(r.chain == "BERTH-PREROUTING" and r.target == "DROP" for r in raw)
    assert any(r.src == BLOCK and r.rpfilter for r in raw)  # the block's addresses only from where they live
    assert any(r.src == "!" + BLOCK and r.in_iface == "bth1001" for r in raw)  # the bridge sends only the block's
    assert any(r.src == "!" + BLOCK and r.in_iface == "bth1001.+" for r in raw)  # and so do its networks' bridges


def test_plans_of_two_users_never_share_a_rule():
    a = set(plan(daemons=DAEMONS))
    b = set(plan("bob", "10.213.4.0/24", 1002, rules.DaemonCgroups("berth-dockerd/bob", "berth-dockerd")))
    assert not a & b
    # every rule matches only its own user's block (or, IPv6, interfaces), so order across users is free
    for r in a:
        if r.ip6:
            assert r.out_iface in ("bth1001", "bth1001.+"), r
        else:
            assert BLOCK in (r.src.lstrip("!"), r.dst.lstrip("!"))


def test_the_plan_lists_its_rules_in_the_order_of_the_jumps():
    """The reaper compares what it reads (chain by chain, in jump order) with the plan."""
    order = [(j.ip6, j.table, j.target) for j in rules.chains(cfg()).jumps()]
    chains_in_plan = [(r.ip6, r.table, r.chain) for r in plan(daemons=DAEMONS)]
    assert chains_in_plan == sorted(chains_in_plan, key=order.index)


def test_chains_and_jumps_follow_the_prefix():
    c = rules.chains(config.parse({"network": {"chain_prefix": "BT7"}}))
    assert (c.forward, c.output, c.prerouting, c.postrouting) == ("BT7-FORWARD", "BT7-OUTPUT", "BT7-PREROUTING",
                                                                  "BT7-POSTROUTING")
    assert [(j.table, j.chain, j.target) for j in c.jumps(ip6=False)] == [
        ("filter", "FORWARD", "BT7-FORWARD"), ("filter", "OUTPUT", "BT7-OUTPUT"),
        ("raw", "PREROUTING", "BT7-PREROUTING"), ("nat", "POSTROUTING", "BT7-POSTROUTING")]
    assert [(j.ip6, j.table, j.chain, j.target) for j in c.jumps()][4:] == [
        (True, "filter", "FORWARD", "BT7-FORWARD"), (True, "filter", "OUTPUT", "BT7-OUTPUT")]
