import errno
import socket
import struct

import pytest

from berth.net import rtnl


def attrs(buf):
    """Decode a flat run of rtattrs into [(type, payload)]."""
    out, off = [], 0
    while off < len(buf):
        length, kind = struct.unpack_from("=HH", buf, off)
        out.append((kind, buf[off + 4:off + length]))
        off += (length + 3) & ~3
    return out


def header(msg):
    return struct.unpack_from("=IHHII", msg)


def test_new_bridge_request():
    msg = rtnl.new_bridge_request("bth1001")
    length, kind, flags, _, _ = header(msg)
    assert length == len(msg) and length % 4 == 0
    assert kind == rtnl.RTM_NEWLINK
    assert flags & rtnl.NLM_F_CREATE and flags & rtnl.NLM_F_EXCL and flags & rtnl.NLM_F_ACK
    body = attrs(msg[16 + 16:])
    assert (rtnl.IFLA_IFNAME, b"bth1001\0") in body
    linkinfo = dict(body)[rtnl.IFLA_LINKINFO]
    assert attrs(linkinfo) == [(rtnl.IFLA_INFO_KIND, b"bridge")]


def test_new_address_request():
    msg = rtnl.new_address_request(7, "10.213.5.1", 25)
    family, prefixlen, _, _, index = struct.unpack_from("=BBBBi", msg, 16)
    assert (family, prefixlen, index) == (socket.AF_INET, 25, 7)
    body = dict(attrs(msg[16 + 8:]))
    assert body[rtnl.IFA_LOCAL] == body[rtnl.IFA_ADDRESS] == socket.inet_aton("10.213.5.1")


def test_link_up_request_sets_only_the_up_flag_and_the_alias():
    msg = rtnl.link_up_request(9, "berth:alice")
    _, _, index, flags, change = struct.unpack_from("=BxHiII", msg, 16)
    assert (index, flags, change) == (9, rtnl.IFF_UP, rtnl.IFF_UP)
    assert attrs(msg[16 + 16:]) == [(rtnl.IFLA_IFALIAS, b"berth:alice\0")]


def test_parse_ack():
    ok = struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", 0) + b"\0" * 16
    exists = struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -errno.EEXIST) + b"\0" * 16
    assert rtnl.parse_ack(ok) == 0
    assert rtnl.parse_ack(exists) == errno.EEXIST
    with pytest.raises(OSError):
        rtnl.parse_ack(struct.pack("=IHHII", 16, 16, 0, 1, 0))
