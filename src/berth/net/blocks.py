"""Pure address planning: carving the pool into blocks and laying one out.

A user's block is split in two disjoint halves: the bridge subnet (the net
container and `docker run` without --network) and the user's own
default-address-pools (`docker network create`, compose). Keeping them
disjoint matters: dockerd refuses to start when the bridge subnet lies inside
its own address pools ("Pool overlaps", moby#46098).
"""

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class BlockLayout:
    block: ipaddress.IPv4Network
    bridge_net: ipaddress.IPv4Network
    user_pool: ipaddress.IPv4Network
    user_network_prefix: int

    @property
    def gateway(self):
        return next(self.bridge_net.hosts())

    @property
    def bridge_cidr(self):
        return f"{self.gateway}/{self.bridge_net.prefixlen}"


def layout(block):
    block = ipaddress.IPv4Network(block)
    bridge_net, user_pool = block.subnets(prefixlen_diff=1)
    # Four more bits give 8 networks of their own; /29 is the smallest that
    # still leaves a gateway and a few containers.
    size = min(block.prefixlen + 4, 29)
    return BlockLayout(block, bridge_net, user_pool, size)


def choose_block(pool, block_prefix, taken, host_networks):
    """The first block of the pool that is neither leased nor on the host.

    `taken` are blocks already leased; `host_networks` are networks of
    addresses and routes the host already has (a default route is not
    passed in: it overlaps everything and means nothing here).
    Returns None when nothing is free.
    """
    taken = [ipaddress.IPv4Network(t) for t in taken]
    busy = [*taken, *(ipaddress.IPv4Network(n, strict=False) for n in host_networks)]
    for candidate in ipaddress.IPv4Network(pool).subnets(new_prefix=block_prefix):
        if not any(candidate.overlaps(b) for b in busy):
            return candidate
    return None


def pool_size(pool, block_prefix):
    return 2 ** (block_prefix - ipaddress.IPv4Network(pool).prefixlen)


def block_of_bridge(bridge_subnet):
    """The user's block, from the bridge subnet (its first half, see layout)."""
    return ipaddress.IPv4Network(bridge_subnet, strict=False).supernet(prefixlen_diff=1)
