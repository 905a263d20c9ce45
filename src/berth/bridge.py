"""The user's bridge and the host's networks, through netlink (pyroute2).

pyroute2 is imported inside the functions: the warm path never needs it.
"""

import contextlib
import errno
import ipaddress
import logging
import os

from .errors import NetworkError

log = logging.getLogger(__name__)

AF_INET = 2
MAIN_TABLE = 254


@contextlib.contextmanager
def _ipr():
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            yield ipr
    except NetlinkError as e:
        raise NetworkError(f"netlink refused a change: {e}",
                           hint="berth needs root (CAP_NET_ADMIN) to manage bridges") from None


def _lookup(ipr, name):
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def ensure_bridge(name, cidr):
    """Make bridge `name` exist, carry `cidr` (gateway/prefix) and be up.

    Returns True if the bridge was created by this call.
    """
    gateway = ipaddress.IPv4Interface(cidr)
    created = False
    with _ipr() as ipr:
        index = _lookup(ipr, name)
        if index is None:
            ipr.link("add", ifname=name, kind="bridge")
            index = _lookup(ipr, name)
            created = True
            log.info("created bridge %s", name)
        else:
            kind = ipr.get_links(index)[0].get(("linkinfo", "kind"))
            if kind != "bridge":
                raise NetworkError(f"network interface {name} exists and is a {kind or 'plain link'}, not a bridge",
                                   hint=f"remove or rename it (ip link del {name}), or change [network].bridge_prefix")
        have = {(a.get("address"), a["prefixlen"]) for a in ipr.get_addr(family=AF_INET, index=index)}
        if (str(gateway.ip), gateway.network.prefixlen) not in have:
            ipr.addr("add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen)
        ipr.link("set", index=index, state="up")
    return created


def remove_bridge(name):
    """Delete the bridge; already gone is success. Returns True if it was there."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _ipr() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise
            return False
    log.info("removed bridge %s", name)
    return True


def bridge_exists(name):
    """Cheap check through sysfs, no netlink import."""
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def host_networks():
    """IPv4 networks the host already uses: its addresses and main-table routes.

    A default route is left out: it overlaps everything.
    """
    nets = set()
    with _ipr() as ipr:
        for a in ipr.get_addr(family=AF_INET):
            nets.add(ipaddress.IPv4Network(f"{a.get('address')}/{a['prefixlen']}", strict=False))
        for r in ipr.get_routes(family=AF_INET, table=MAIN_TABLE):
            dst, length = r.get("dst"), r["dst_len"]
            if dst and length:
                nets.add(ipaddress.IPv4Network(f"{dst}/{length}", strict=False))
    return sorted(nets)
