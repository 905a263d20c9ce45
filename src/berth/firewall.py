"""Apply and remove planned rules with python-iptables (iptc).

iptc commits a whole table per change, so two processes changing a table at
once would lose one change: every change here holds the xtables lock, the
same one the iptables commands take, so berth and a concurrent `iptables`
never interleave. iptc is imported only here, only when rules change.
"""

import contextlib
import fcntl
import ipaddress
import logging
import os
import time

from .errors import NetworkError
from .rules import Rule, chains, user_comment

log = logging.getLogger(__name__)

XTABLES_LOCK = os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")


@contextlib.contextmanager
def xtables_lock(timeout=30.0):
    fd = os.open(XTABLES_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise NetworkError(f"the xtables lock {XTABLES_LOCK} is held for over {timeout:g} s",
                                       hint="another iptables run hangs; find it with: fuser " + XTABLES_LOCK) from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


def _iptc():
    try:
        import iptc
    except Exception as e:  # iptc raises XTablesError/OSError when libxtables is missing
        raise NetworkError(f"python-iptables cannot load libiptc ({e})",
                           hint="install iptables (apt-get install iptables)") from None
    return iptc


def _norm_net(value):
    """iptc spells networks '10.0.0.0/255.255.255.0'; plans use CIDR."""
    if not value:
        return ""
    neg = value.startswith("!")
    net = ipaddress.IPv4Network(value.lstrip("!"), strict=False)
    if net.prefixlen == 0 and not neg:
        return ""
    return ("!" if neg else "") + str(net)


def _read_rule(r):
    ctstate = comment = ""
    for m in r.matches:
        params = m.get_all_parameters()
        if m.name == "conntrack":
            ctstate = ",".join(params.get("ctstate", []))
        elif m.name == "comment":
            comment = " ".join(params.get("comment", []))
    return ctstate, comment


def _to_key(r, table, chain):
    ctstate, comment = _read_rule(r)
    return Rule(table, chain, r.target.name if r.target else "", _norm_net(r.src), _norm_net(r.dst),
                ctstate, comment)


def _build(iptc, rule):
    r = iptc.Rule()
    if rule.src:
        r.src = rule.src
    if rule.dst:
        r.dst = rule.dst
    if rule.ctstate:
        m = r.create_match("conntrack")
        m.ctstate = rule.ctstate
    if rule.comment:
        m = r.create_match("comment")
        m.comment = rule.comment
    r.target = iptc.Target(r, rule.target)
    return r


@contextlib.contextmanager
def _translated(iptc, doing):
    try:
        yield
    except iptc.IPTCError as e:
        raise NetworkError(f"iptables refused {doing}: {e}",
                           hint="check that the kernel has ip_tables and iptable_nat (berth doctor)") from None


class Firewall:
    """Executes rule plans against the kernel's (legacy) iptables tables."""

    def __init__(self, cfg):
        self.chains = chains(cfg)
        self.iptc = _iptc()

    def _table(self, name):
        table = self.iptc.Table(name)
        table.refresh()
        return table

    def _chain(self, table, name, create):
        if table.is_chain(name):
            return self.iptc.Chain(table, name)
        return table.create_chain(name) if create else None

    def _existing(self, table, chain_name):
        chain = self._chain(table, chain_name, create=False)
        if chain is None:
            return None, []
        return chain, [(r, _to_key(r, table.name, chain_name)) for r in chain.rules]

    def _ensure_jumps(self):
        for jump in self.chains.jumps():
            table = self._table(jump.table)
            self._chain(table, jump.target, create=True)
            builtin = self.iptc.Chain(table, jump.chain)
            if not any(_to_key(r, jump.table, jump.chain) == jump for r in builtin.rules):
                # First, so a host's own DROP rules further down do not
                # shadow berth's ACCEPTs for its users.
                builtin.insert_rule(_build(self.iptc, jump))
                log.info("hooked %s into %s/%s", jump.target, jump.table, jump.chain)

    def ensure_user(self, user, planned):
        """Make the user's rules exactly `planned`. Returns True if anything changed."""
        comment = user_comment(user)
        changed = False
        with xtables_lock(), _translated(self.iptc, f"the rules of {user}"):
            self._ensure_jumps()
            for chain_name in {r.chain for r in planned}:
                table_name = next(r.table for r in planned if r.chain == chain_name)
                want = [r for r in planned if r.chain == chain_name]
                table = self._table(table_name)
                chain, existing = self._existing(table, chain_name)
                have = [key for _, key in existing if key.comment == comment]
                if have == want:
                    continue
                for r, key in existing:
                    if key.comment == comment:
                        chain.delete_rule(r)
                for rule in want:
                    chain.append_rule(_build(self.iptc, rule))
                changed = True
                log.info("set %d rule(s) for %s in %s/%s", len(want), user, table_name, chain_name)
        return changed

    def user_rules_present(self, user, planned):
        comment = user_comment(user)
        for chain_name in {r.chain for r in planned}:
            table = self._table(next(r.table for r in planned if r.chain == chain_name))
            _, existing = self._existing(table, chain_name)
            if [k for _, k in existing if k.comment == comment] != [r for r in planned if r.chain == chain_name]:
                return False
        return True

    def remove_user(self, user):
        """Delete every rule carrying the user's comment; drop berth's chains once empty."""
        comment = user_comment(user)
        removed = 0
        with xtables_lock(), _translated(self.iptc, f"removing the rules of {user}"):
            for jump in self.chains.jumps():
                table = self._table(jump.table)
                chain, existing = self._existing(table, jump.target)
                for r, key in existing:
                    if key.comment == comment:
                        chain.delete_rule(r)
                        removed += 1
                if chain is not None and not [k for _, k in existing if k.comment != comment]:
                    self._remove_chain(table, jump)
        if removed:
            log.info("removed %d rule(s) of %s", removed, user)
        return removed

    def _remove_chain(self, table, jump):
        builtin = self.iptc.Chain(table, jump.chain)
        for r in builtin.rules:
            if _to_key(r, jump.table, jump.chain) == jump:
                builtin.delete_rule(r)
        table.refresh()
        chain = self.iptc.Chain(table, jump.target)
        chain.flush()
        chain.delete()
        log.info("removed the empty chain %s/%s", jump.table, jump.target)

    def users_with_rules(self):
        """Users who have rules in berth's chains (for orphan checks)."""
        users = set()
        for jump in self.chains.jumps():
            _, existing = self._existing(self._table(jump.table), jump.target)
            users.update(k.comment.split(":", 1)[1] for _, k in existing if k.comment.startswith("berth:"))
        return users
