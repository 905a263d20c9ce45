"""Plan berth's iptables rules. Pure: lease and config in, plain data out.

berth keeps its rules in chains of its own, one jump from FORWARD (filter)
and POSTROUTING (nat) into each. Every rule of a user carries the comment
"berth:<user>", so removing a user removes exactly those rules.
"""

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    table: str            # "filter" or "nat"
    chain: str
    target: str           # ACCEPT, DROP, MASQUERADE, or a chain name for jumps
    src: str = ""         # CIDR, "!CIDR", or "" for any
    dst: str = ""
    ctstate: str = ""     # e.g. "RELATED,ESTABLISHED"
    comment: str = ""


@dataclass(frozen=True)
class Chains:
    forward: str
    postrouting: str

    def jumps(self):
        """The rules that hook berth's chains into the built-in ones."""
        return (
            Rule("filter", "FORWARD", self.forward, comment="berth"),
            Rule("nat", "POSTROUTING", self.postrouting, comment="berth"),
        )


def chains(cfg):
    prefix = cfg.network.chain_prefix
    return Chains(forward=f"{prefix}-FORWARD", postrouting=f"{prefix}-POSTROUTING")


def user_comment(user):
    return f"berth:{user}"


def plan_user_rules(cfg, user, block):
    """The rules that give one user's block NAT and keep it from the others.

    Order matters within the user's rules, not across users: every rule
    matches only packets from (or replies to) this user's block.
    """
    block = str(ipaddress.IPv4Network(block))
    pool = str(cfg.network.pool)
    ch = chains(cfg)
    tag = user_comment(user)
    return (
        # Between the user's own networks (bridge and `docker network create`).
        Rule("filter", ch.forward, "ACCEPT", src=block, dst=block, comment=tag),
        # To any other user's block: dropped, whichever user holds it.
        Rule("filter", ch.forward, "DROP", src=block, dst=pool, comment=tag),
        # Out to the world, and the replies back in, even where FORWARD's
        # policy is DROP.
        Rule("filter", ch.forward, "ACCEPT", src=block, comment=tag),
        Rule("filter", ch.forward, "ACCEPT", dst=block, ctstate="RELATED,ESTABLISHED", comment=tag),
        Rule("nat", ch.postrouting, "MASQUERADE", src=block, dst="!" + block, comment=tag),
    )
