"""Addresses on users' interfaces that do not belong there. Pure.

A user's dockerd can be made (in trusted mode, or by anyone who reaches it
around the policy proxy) to put any subnet on a bridge of its own. Inside
another user's block that would take their traffic (the kernel routes to
the most specific network, and a second bridge with the same one takes it
too); anywhere else in the pool it would count as taken when berth hands
out blocks, so a few `docker network create --subnet` could leave none.
berth owns its pool: what users' daemons put in it is weighed here.
"""

import ipaddress


def _network(address):
    return ipaddress.IPv4Interface(address).network


def trespassers(addresses, leases, iface_owner):
    """(link, address, block owner, holder) for each address that lies in
    one user's block but sits on an interface of another user's daemon.

    addresses: [(link, "a.b.c.d/len")]; leases: {user: block};
    iface_owner: {link: user} for the interfaces users' daemons made.
    An interface no user's daemon made (the admin's) is never one.
    """
    blocks = [(user, ipaddress.IPv4Network(block)) for user, block in leases.items()]
    found = []
    for link, address in addresses:
        holder = iface_owner.get(link)
        if holder is None:
            continue
        net = _network(address)
        for owner, block in blocks:
            if owner != holder and net.overlaps(block):
                found.append((link, address, owner, holder))
                break
    return found


def host_networks(networks_by_link, pool, iface_owner):
    """The host's networks that a new block must avoid: all but those of
    users' daemons inside the pool (berth's to hand out, whatever a user's
    daemon was made to put there)."""
    pool = ipaddress.IPv4Network(pool)
    return sorted({net for net, link in networks_by_link
                   if not (link in iface_owner and ipaddress.IPv4Network(net).subnet_of(pool))})
