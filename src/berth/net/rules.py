"""Plan berth's iptables and ip6tables rules. Pure: lease and config in, plain data out.

berth keeps its rules in chains of its own, one jump from each built-in
chain it uses into each. Every rule of a user carries the comment
"berth:<user>", so removing a user removes exactly those rules.
"""

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    table: str            # "filter", "nat" or "raw"
    chain: str
    target: str           # ACCEPT, DROP, MASQUERADE, or a chain name for jumps
    src: str = ""         # CIDR, "!CIDR", or "" for any
    dst: str = ""
    ctstate: str = ""     # e.g. "RELATED,ESTABLISHED"
    comment: str = ""
    owner: str = ""       # the uid of the local socket that sends (OUTPUT only)
    in_iface: str = ""    # the interface a packet came in on; "!name" for any other
    rpfilter: bool = False  # matches a packet whose source does not route back where it came from
    out_iface: str = ""   # the interface a packet leaves by ("name+" for a prefix)
    cgroup: str = ""      # the sending socket's cgroup2 (or one below it), relative to the hierarchy's root
    ip6: bool = False     # an ip6tables rule
    icmp6: str = ""       # an ICMPv6 type, by number ("135": neighbour solicitation)


@dataclass(frozen=True)
class Chains:
    forward: str
    output: str
    prerouting: str       # raw table: before conntrack, so a forged packet makes no state
    postrouting: str

    def jumps(self, ip6=True):
        """The rules that hook berth's chains into the built-in ones, in
        the order a user's plan lists its rules (IPv6's last)."""
        return (
            Rule("filter", "FORWARD", self.forward, comment="berth"),
            Rule("filter", "OUTPUT", self.output, comment="berth"),
            Rule("raw", "PREROUTING", self.prerouting, comment="berth"),
            Rule("nat", "POSTROUTING", self.postrouting, comment="berth"),
        ) + ((
            Rule("filter", "FORWARD", self.forward, comment="berth", ip6=True),
            Rule("filter", "OUTPUT", self.output, comment="berth", ip6=True),
        ) if ip6 else ())


def chains(cfg):
    prefix = cfg.network.chain_prefix
    return Chains(forward=f"{prefix}-FORWARD", output=f"{prefix}-OUTPUT", prerouting=f"{prefix}-PREROUTING",
                  postrouting=f"{prefix}-POSTROUTING")


def user_comment(user):
    return f"berth:{user}"


@dataclass(frozen=True)
class DaemonCgroups:
    """Where users' dockerds run, as cgroup2 paths relative to the
    hierarchy's root: `own` is this user's daemon's cgroup, `every` the one
    above every user's (cgroups.daemon_cgroups says which they are)."""
    own: str
    every: str


def plan_user_rules(cfg, user, block, uid, daemons=None, ip6=True):
    """The rules that give one user's block NAT and keep everyone else out.

    Isolation is by destination: a connection new to the user's block is
    accepted only from that block (forwarded) or from root and the user
    themself (the host's own processes), whatever its source claims; a
    packet whose source claims the block but does not route back to where
    it came from (another user's container forging it) is dropped before
    conntrack sees it. Every rule matches only packets to or from this
    user's block, so the order across users is free.

    What dockerd fetches for a user (a build's ADD <url>, BuildKit's
    sources, a pull from an address) and docker-proxy's connections for
    `-p` leave as root from the host: `daemons` (DaemonCgroups) lets in
    the user's own daemon and keeps every other user's out, before root
    is let in. IPv6 (`ip6`), where users have no blocks, the same by
    interface: the user's bridge and their networks' (<bridge>.<suffix>),
    matched by name, so a bridge dockerd makes is covered from its first
    packet, link-local addresses included.
    """
    block = str(ipaddress.IPv4Network(block))
    pool = str(cfg.network.pool)
    ch = chains(cfg)
    tag = user_comment(user)
    bridge = f"{cfg.network.bridge_prefix}{uid}"
    return (
        # Forwarded: between the user's own networks (bridge and `docker network create`) ...
        Rule("filter", ch.forward, "ACCEPT", src=block, dst=block, comment=tag),
        # ... replies to what they opened ...
        Rule("filter", ch.forward, "ACCEPT", dst=block, ctstate="RELATED,ESTABLISHED", comment=tag),
        # ... and nothing else new into the block: not from other users, their
        # networks anywhere, forged sources or the outside.
        Rule("filter", ch.forward, "DROP", dst=block, comment=tag),
        # Out: never into the pool (blocks not leased yet included), else to the world.
        Rule("filter", ch.forward, "DROP", src=block, dst=pool, comment=tag),
        Rule("filter", ch.forward, "ACCEPT", src=block, comment=tag),
        # From the host's own processes: root (docker-proxy for -p, dockerd)
        # and the user; replies to the user's containers; no other user.
        Rule("filter", ch.output, "ACCEPT", dst=block, ctstate="RELATED,ESTABLISHED", comment=tag),
        *_host_processes(ch.output, tag, uid, daemons, dst=block),
        # Anti-spoofing: the block's addresses only from where they live, and
        # from the user's bridge only the block's addresses.
        Rule("raw", ch.prerouting, "DROP", src=block, rpfilter=True, comment=tag),
        Rule("raw", ch.prerouting, "DROP", src="!" + block, in_iface=bridge, comment=tag),
        # ... and their networks' bridges (named <bridge>.<suffix> by the policy proxy)
        Rule("raw", ch.prerouting, "DROP", src="!" + block, in_iface=bridge + ".+", comment=tag),
        Rule("nat", ch.postrouting, "MASQUERADE", src=block, dst="!" + block, comment=tag),
    ) + (_ip6_rules(ch, tag, uid, bridge, daemons) if ip6 else ())


def _host_processes(chain, tag, uid, daemons, ip6=False, **match):
    """From the host into the user's block (IPv4) or bridges (IPv6): the
    user's own daemon, no other user's, root, the user; nobody else."""
    daemon_rules = () if daemons is None else (
        Rule("filter", chain, "ACCEPT", cgroup=daemons.own, comment=tag, ip6=ip6, **match),
        Rule("filter", chain, "DROP", cgroup=daemons.every, comment=tag, ip6=ip6, **match),
    )
    return daemon_rules + (
        Rule("filter", chain, "ACCEPT", owner="0", comment=tag, ip6=ip6, **match),
        Rule("filter", chain, "ACCEPT", owner=str(uid), comment=tag, ip6=ip6, **match),
        Rule("filter", chain, "DROP", comment=tag, ip6=ip6, **match),
    )


ND_TYPES = ("135", "136")  # neighbour solicitation and advertisement (RFC 4861)


def _ip6_rules(ch, tag, uid, bridge, daemons):
    """IPv6 by interface: users have no IPv6 blocks (the policy refuses
    --ipv6 networks), so what a container has is link-local, which only
    the host's own processes and the user's other containers on the same
    bridges can reach."""
    mine = (bridge, bridge + ".+")
    # Link-local addresses are never routed: what passes FORWARD is bridged
    # within one bridge (br_netfilter), or a routed address, which no
    # network of a user has: nothing new onto the user's bridges from elsewhere.
    forward = [Rule("filter", ch.forward, "ACCEPT", in_iface=o, out_iface=o, comment=tag, ip6=True) for o in mine]
    forward += [Rule("filter", ch.forward, "DROP", out_iface=o, comment=tag, ip6=True) for o in mine]
    output = []
    for o in mine:
        output += [Rule("filter", ch.output, "ACCEPT", out_iface=o, ctstate="RELATED,ESTABLISHED", comment=tag,
                        ip6=True),
                   # Neighbour discovery, which IPv6 needs as IPv4 needs ARP (which no rule
                   # sees): the kernel's own, from a socket of its own that no owner matches;
                   # no user's process can send it (raw ICMPv6 needs CAP_NET_RAW).
                   *(Rule("filter", ch.output, "ACCEPT", out_iface=o, icmp6=t, comment=tag, ip6=True)
                     for t in ND_TYPES),
                   *_host_processes(ch.output, tag, uid, daemons, ip6=True, out_iface=o)]
    return tuple(forward + output)
