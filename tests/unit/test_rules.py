from berth import config, rules


def cfg():
    return config.parse({"network": {"pool": "10.213.0.0/16", "chain_prefix": "BERTH"}})


def test_plan_for_one_user():
    plan = rules.plan_user_rules(cfg(), "alice", "10.213.3.0/24")
    tag = "berth:alice"
    assert all(r.comment == tag for r in plan)
    fwd = [r for r in plan if r.table == "filter"]
    nat = [r for r in plan if r.table == "nat"]
    assert {r.chain for r in fwd} == {"BERTH-FORWARD"}
    assert nat == [rules.Rule("nat", "BERTH-POSTROUTING", "MASQUERADE",
                              src="10.213.3.0/24", dst="!10.213.3.0/24", comment=tag)]
    # own block accepted before the pool is dropped, and that before the general accept
    targets = [(r.src, r.dst, r.target) for r in fwd]
    assert targets.index(("10.213.3.0/24", "10.213.3.0/24", "ACCEPT")) < \
        targets.index(("10.213.3.0/24", "10.213.0.0/16", "DROP")) < \
        targets.index(("10.213.3.0/24", "", "ACCEPT"))
    assert any(r.dst == "10.213.3.0/24" and r.ctstate == "RELATED,ESTABLISHED" for r in fwd)


def test_plans_of_two_users_never_share_a_rule():
    a = set(rules.plan_user_rules(cfg(), "alice", "10.213.3.0/24"))
    b = set(rules.plan_user_rules(cfg(), "bob", "10.213.4.0/24"))
    assert not a & b
    # every rule matches only its own user's block, so order across users is free
    for r in a:
        assert "10.213.3.0/24" in (r.src, r.dst)


def test_chains_and_jumps_follow_the_prefix():
    c = rules.chains(config.parse({"network": {"chain_prefix": "BT7"}}))
    assert (c.forward, c.postrouting) == ("BT7-FORWARD", "BT7-POSTROUTING")
    jumps = c.jumps()
    assert [(j.table, j.chain, j.target) for j in jumps] == [
        ("filter", "FORWARD", "BT7-FORWARD"), ("nat", "POSTROUTING", "BT7-POSTROUTING")]
