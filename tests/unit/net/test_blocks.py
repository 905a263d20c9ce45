import ipaddress

from berth.net import blocks

N = ipaddress.IPv4Network


def test_layout_halves_are_disjoint_and_inside_block():
    lay = blocks.layout("10.213.5.0/24")
    assert lay.bridge_net == N("10.213.5.0/25")
    assert lay.user_pool == N("10.213.5.128/25")
    assert not lay.bridge_net.overlaps(lay.user_pool)
    assert str(lay.gateway) == "10.213.5.1"
    assert lay.bridge_cidr == "10.213.5.1/25"
    assert lay.user_network_prefix == 28
    # 8 user networks fit in the pool half
    assert len(list(lay.user_pool.subnets(new_prefix=lay.user_network_prefix))) == 8


def test_layout_small_and_large_blocks():
    assert blocks.layout("10.0.0.0/26").user_network_prefix == 29
    assert blocks.layout("10.0.0.0/20").user_network_prefix == 24


def test_choose_first_free_skipping_leases_and_host_networks():
    taken = [N("10.213.0.0/24")]
    host = [N("10.213.1.128/25"), N("192.168.0.0/16")]
    assert blocks.choose_block("10.213.0.0/16", 24, taken, host) == N("10.213.2.0/24")


def test_choose_skips_a_host_route_covering_several_blocks():
    host = [N("10.213.0.0/22")]
    assert blocks.choose_block("10.213.0.0/16", 24, [], host) == N("10.213.4.0/24")


def test_choose_returns_none_when_exhausted():
    taken = [N("10.0.0.0/25"), N("10.0.0.128/25")]
    assert blocks.choose_block("10.0.0.0/24", 25, taken, []) is None


def test_pool_size():
    assert blocks.pool_size("10.213.0.0/16", 24) == 256
