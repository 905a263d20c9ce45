"""The user's bridge and the host's networks, through netlink.

Creation uses raw rtnetlink (rtnl.py: it is on the cold login's critical
path); reading the host's networks and removal use pyroute2, imported inside
the functions, so neither the warm nor the cold path pays for its import.
The addresses every `up` checks for trespassers come from iproute2's `ip -j`.
"""

import contextlib
import errno
import ipaddress
import json
import logging
import os
import socket
import subprocess

from berth.core.errors import NetworkError
from berth.net import rtnl

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
                           hint="berth needs root (CAP_NET_ADMIN) to manage bridges") from e


def _rtnl(msg, what):
    try:
        rtnl.request(msg)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return False
        hint = "berth needs root (CAP_NET_ADMIN) to manage bridges" if e.errno == errno.EPERM else \
            "check the kernel's bridge support (modprobe bridge)"
        raise NetworkError(f"the kernel refused to {what}: {e.strerror}", hint=hint) from e
    return True


ALIAS_PREFIX = "berth:"


def ensure_bridge(name, cidr, owner=""):
    """Make bridge `name` exist, carry `cidr` (gateway/prefix) and be up.

    Returns True if the bridge was created by this call (and so is the
    caller's to remove on rollback). Raw rtnetlink, see rtnl.py for why.
    """
    iface = ipaddress.IPv4Interface(cidr)
    created = _rtnl(rtnl.new_bridge_request(name), f"create bridge {name}")
    if not created and not bridge_exists(name):
        raise NetworkError(f"network interface {name} exists and is not a bridge",
                           hint=f"remove or rename it (ip link del {name}), or change [network].bridge_prefix")
    try:
        index = socket.if_nametoindex(name)
        _rtnl(rtnl.new_address_request(index, str(iface.ip), iface.network.prefixlen),
              f"add {cidr} to {name}")
        # The alias marks the bridge as berth's: cleanup never takes one it did not make.
        _rtnl(rtnl.link_up_request(index, ALIAS_PREFIX + owner), f"bring {name} up")
    except BaseException:
        if created:
            remove_bridge(name)
        raise
    if created:
        log.info("created bridge %s with %s", name, cidr)
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


def berth_bridges(prefix, sysfs="/sys/class/net"):
    """Bridges berth made: named prefix + uid and marked with berth's alias."""
    found = []
    for name in sorted(os.listdir(sysfs)):
        if not (name.startswith(prefix) and name[len(prefix):].isdigit()):
            continue
        try:
            with open(os.path.join(sysfs, name, "ifalias")) as f:
                if f.read().startswith(ALIAS_PREFIX):
                    found.append(name)
        except OSError:
            continue
    return found


def network_bridges(bridge, sysfs="/sys/class/net"):
    """The bridges of a user's own networks: <bridge>.<suffix>, as the
    policy proxy names them (policy.name_bridge)."""
    return sorted(n for n in os.listdir(sysfs) if n.startswith(bridge + "."))


def bridge_exists(name):
    """Cheap check through sysfs, no netlink import."""
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def host_networks_by_link():
    """(network, link name) for every IPv4 address and main-table route of
    the host; a default route is left out (it overlaps everything)."""
    found = set()
    with _ipr() as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.get_links()}
        for a in ipr.get_addr(family=AF_INET):
            net = ipaddress.IPv4Network(f"{a.get('address')}/{a['prefixlen']}", strict=False)
            found.add((net, names.get(a["index"])))
        for r in ipr.get_routes(family=AF_INET, table=MAIN_TABLE):
            dst, length = r.get("dst"), r["dst_len"]
            if dst and length:
                found.add((ipaddress.IPv4Network(f"{dst}/{length}", strict=False), names.get(r.get("oif"))))
    return sorted(found, key=lambda item: (item[0], item[1] or ""))


def host_networks():
    """IPv4 networks the host already uses (for choosing a free block)."""
    return sorted({net for net, _ in host_networks_by_link()})


def addresses():
    """[(link name, "a.b.c.d/len")] for every IPv4 address of the host.

    Through iproute2's `ip -j` (3 ms) rather than pyroute2 (150 ms to
    import): every cold `up` asks."""
    r = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
    if r.returncode != 0:
        raise NetworkError(f"ip addr show failed: {r.stderr.strip()}", hint="install iproute2")
    return [(link["ifname"], f"{a['local']}/{a['prefixlen']}")
            for link in json.loads(r.stdout or "[]") for a in link.get("addr_info", ()) if a.get("family") == "inet"]


def remove_address(link, address):
    """Take `address` off `link` (an address a user's daemon had no business holding)."""
    r = subprocess.run(["ip", "addr", "del", address, "dev", link], capture_output=True, text=True)
    if r.returncode != 0 and "Cannot assign" not in r.stderr:  # already gone
        raise NetworkError(f"cannot remove {address} from {link}: {r.stderr.strip()}",
                           hint=f"remove it by hand: ip addr del {address} dev {link}")
