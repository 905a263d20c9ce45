"""Plan berth's iptables rules. Pure: lease and config in, plain data out.

berth keeps its rules in chains of its own, one jump from FORWARD (filter)
and POSTROUTING (nat) into each. Every rule of a user carries the comment
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


@dataclass(frozen=True)
class Chains:
    forward: str
    output: str
    prerouting: str       # raw table: before conntrack, so a forged packet makes no state
    postrouting: str

    def jumps(self):
        """The rules that hook berth's chains into the built-in ones, in
        the order a user's plan lists its rules."""
        return (
            Rule("filter", "FORWARD", self.forward, comment="berth"),
            Rule("filter", "OUTPUT", self.output, comment="berth"),
            Rule("raw", "PREROUTING", self.prerouting, comment="berth"),
            Rule("nat", "POSTROUTING", self.postrouting, comment="berth"),
        )


def chains(cfg):
    prefix = cfg.network.chain_prefix
    return Chains(forward=f"{prefix}-FORWARD", output=f"{prefix}-OUTPUT", prerouting=f"{prefix}-PREROUTING",
                  postrouting=f"{prefix}-POSTROUTING")


def user_comment(user):
    return f"berth:{user}"


def plan_user_rules(cfg, user, block, uid):
    """The rules that give one user's block NAT and keep everyone else out.

    Isolation is by destination: a connection new to the user's block is
    accepted only from that block (forwarded) or from root and the user
    themself (the host's own processes), whatever its source claims; a
    packet whose source claims the block but does not route back to where
    it came from (another user's container forging it) is dropped before
    conntrack sees it. Every rule matches only packets to or from this
    user's block, so the order across users is free.
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
        Rule("filter", ch.output, "ACCEPT", dst=block, owner="0", comment=tag),
        Rule("filter", ch.output, "ACCEPT", dst=block, owner=str(uid), comment=tag),
        Rule("filter", ch.output, "DROP", dst=block, comment=tag),
        # Anti-spoofing: the block's addresses only from where they live, and
        # from the user's bridge only the block's addresses.
        Rule("raw", ch.prerouting, "DROP", src=block, rpfilter=True, comment=tag),
        Rule("raw", ch.prerouting, "DROP", src="!" + block, in_iface=bridge, comment=tag),
        # ... and their networks' bridges (named <bridge>.<suffix> by the policy proxy)
        Rule("raw", ch.prerouting, "DROP", src="!" + block, in_iface=bridge + ".+", comment=tag),
        Rule("nat", ch.postrouting, "MASQUERADE", src=block, dst="!" + block, comment=tag),
    )
