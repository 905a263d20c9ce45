from berth import config, rules

BLOCK = "10.213.3.0/24"


def cfg():
    return config.parse({"network": {"pool": "10.213.0.0/16", "chain_prefix": "BERTH", "bridge_prefix": "bth"}})


def plan(user="alice", block=BLOCK, uid=1001):
    return rules.plan_user_rules(cfg(), user, block, uid)


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
    out = [(r.owner, r.ctstate, r.target) for r in plan() if r.chain == "BERTH-OUTPUT"]
    assert out == [("", "RELATED,ESTABLISHED", "ACCEPT"), ("0", "", "ACCEPT"), ("1001", "", "ACCEPT"),
                   ("", "", "DROP")]
    assert all(r.dst == BLOCK for r in plan() if r.chain == "BERTH-OUTPUT")


def test_forged_sources_are_dropped_before_conntrack():
    raw = [r for r in plan() if r.table == "raw"]
    assert all(r.chain == "BERTH-PREROUTING" and r.target == "DROP" for r in raw)
    assert any(r.src == BLOCK and r.rpfilter for r in raw)  # the block's addresses only from where they live
    assert any(r.src == "!" + BLOCK and r.in_iface == "bth1001" for r in raw)  # the bridge sends only the block's
    assert any(r.src == "!" + BLOCK and r.in_iface == "bth1001.+" for r in raw)  # and so do its networks' bridges


def test_plans_of_two_users_never_share_a_rule():
    a = set(plan())
    b = set(plan("bob", "10.213.4.0/24", 1002))
    assert not a & b
    # every rule matches only its own user's block, so order across users is free
    for r in a:
        assert BLOCK in (r.src.lstrip("!"), r.dst.lstrip("!"))


def test_the_plan_lists_its_rules_in_the_order_of_the_jumps():
    """The reaper compares what it reads (chain by chain, in jump order) with the plan."""
    order = [j.target for j in rules.chains(cfg()).jumps()]
    chains_in_plan = [r.chain for r in plan()]
    assert chains_in_plan == sorted(chains_in_plan, key=order.index)


def test_chains_and_jumps_follow_the_prefix():
    c = rules.chains(config.parse({"network": {"chain_prefix": "BT7"}}))
    assert (c.forward, c.output, c.prerouting, c.postrouting) == ("BT7-FORWARD", "BT7-OUTPUT", "BT7-PREROUTING",
                                                                  "BT7-POSTROUTING")
    assert [(j.table, j.chain, j.target) for j in c.jumps()] == [
        ("filter", "FORWARD", "BT7-FORWARD"), ("filter", "OUTPUT", "BT7-OUTPUT"),
        ("raw", "PREROUTING", "BT7-PREROUTING"), ("nat", "POSTROUTING", "BT7-POSTROUTING")]
