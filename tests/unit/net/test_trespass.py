import ipaddress

from berth.net import trespass

LEASES = {"alice": "10.213.3.0/24", "bob": "10.213.4.0/24"}
OWNERS = {"bth1001": "alice", "br-aaaaaaaaaaaa": "alice", "bth1002": "bob", "br-bbbbbbbbbbbb": "bob"}


def test_an_address_in_another_users_block_on_a_users_bridge_trespasses():
    addresses = [("bth1001", "10.213.3.1/25"), ("br-aaaaaaaaaaaa", "10.213.3.129/28"),  # alice's own
                 ("bth1002", "10.213.4.1/25"),
                 ("br-bbbbbbbbbbbb", "10.213.3.65/26"),   # bob's daemon, inside alice's bridge half
                 ("eth1", "10.213.3.200/32"),             # the admin's: never touched
                 ("br-bbbbbbbbbbbb", "10.213.9.1/24")]    # bob's, in the pool but in no block
    assert trespass.trespassers(addresses, LEASES, OWNERS) == [
        ("br-bbbbbbbbbbbb", "10.213.3.65/26", "alice", "bob")]


def test_a_network_wider_than_a_block_trespasses_too():
    assert trespass.trespassers([("br-bbbbbbbbbbbb", "10.213.0.1/16")], LEASES, OWNERS) == [
        ("br-bbbbbbbbbbbb", "10.213.0.1/16", "alice", "bob")]


def test_networks_users_daemons_put_in_the_pool_do_not_make_blocks_unavailable():
    by_link = [(ipaddress.IPv4Network("10.213.9.0/24"), "br-bbbbbbbbbbbb"),   # bob's daemon: ignored
               (ipaddress.IPv4Network("10.213.128.0/17"), "br-bbbbbbbbbbbb"),
               (ipaddress.IPv4Network("10.213.200.0/24"), "eth1"),             # the admin's: avoided
               (ipaddress.IPv4Network("192.168.0.0/16"), "br-bbbbbbbbbbbb")]   # outside the pool: avoided
    assert trespass.host_networks(by_link, "10.213.0.0/16", OWNERS) == [
        ipaddress.IPv4Network("10.213.200.0/24"), ipaddress.IPv4Network("192.168.0.0/16")]
