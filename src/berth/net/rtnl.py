"""The three rtnetlink requests a cold `berth up` needs before dockerd can
start: create a bridge, give it an address, bring it up.

dockerd refuses to start until its bridge exists, so whatever makes the
bridge sits on the critical path of every cold login. pyroute2's import
alone (~50 ms here, ~0.3 s on slower boxes) would be most of berth's own
overhead there; these requests are a few hundred bytes of struct packing.
Everything else that talks netlink (dumps of addresses and routes, removal)
uses pyroute2 in bridge.py.
"""

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_NEWADDR = 16, 20
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_IFNAME, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_INFO_KIND = 3, 18, 20, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBi")   # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")


def _align(n):
    return (n + 3) & ~3


def attr(kind, data):
    raw = _RTATTR.pack(_RTATTR.size + len(data), kind) + data
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def message(kind, flags, body, seq=1):
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def new_bridge_request(name):
    linkinfo = attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge"))
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, name.encode() + b"\0") + linkinfo
    return message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def new_address_request(index, address, prefixlen):
    packed = socket.inet_aton(address)
    body = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, 0, index) + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    return message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def link_up_request(index, alias=""):
    """Bring the link up, and set its alias (the kernel takes an alias only
    on a change of an existing link, not at creation)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    if alias:
        body += attr(IFLA_IFALIAS, alias.encode() + b"\0")
    return message(RTM_NEWLINK, 0, body)


def parse_ack(data):
    """The errno of a netlink ACK (0 for success)."""
    length, kind, _, _, _ = _NLMSGHDR.unpack_from(data)
    if kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"unexpected netlink answer type {kind}")
    (error,) = struct.unpack_from("=i", data, _NLMSGHDR.size)
    return -error


def request(msg):
    """Send one request, wait for its ACK; raises OSError on a netlink error."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.sendall(msg)
        code = parse_ack(s.recv(65536))
    if code:
        raise OSError(code, os.strerror(code))
