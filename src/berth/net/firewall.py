"""Apply and remove planned rules with python-iptables (iptc).

iptc commits a whole table per change, so two processes changing a table at
once would lose one change: every change here holds the xtables lock, the
same one the iptables commands take, so berth and a concurrent `iptables`
never interleave. iptc is imported only here, only when rules change.
"""

import contextlib
import ipaddress
import logging
import os
import sys
import tempfile
import threading

from berth.core.errors import NetworkError
from berth.core.locks import flock
from berth.net.rules import Rule, chains, user_comment

log = logging.getLogger(__name__)

# The lock the iptables commands take. Always this path: the variable
# iptables reads (XTABLES_LOCKFILE) is not for root to take from anyone's
# environment. flock() makes it 0600 as iptables does: a lock file others
# can open is one they can hold, and every iptables call would wait.
XTABLES_LOCK = "/run/xtables.lock"


def xtables_lock(timeout=30.0):
    return flock(XTABLES_LOCK, timeout, "iptables (the xtables lock)")


LIBDIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib")


def _point_iptc_at_its_libraries(environ=os.environ):
    """Tell python-iptables where its libraries are, through its own knobs.

    Left to itself it runs `ldconfig -v` and ctypes' library search (gcc,
    ld) on every import: a good part of 0.1 s on every cold `berth up`.
    """
    import glob
    import importlib.util

    for libdir in LIBDIRS:
        plugins = os.path.join(libdir, "xtables")
        versions = sorted(glob.glob(os.path.join(libdir, "libxtables.so.*[0-9]")), key=len)
        if not (os.path.isdir(plugins) and versions):
            continue
        # Set, not defaulted: which libraries root loads is never taken
        # from the environment berth was started with.
        environ["XTABLES_LIBDIR"] = plugins
        environ["PYTHON_IPTABLES_XTABLES_VERSION"] = versions[0].rsplit(".so.", 1)[1]
        spec = importlib.util.find_spec("iptc")
        if spec and spec.submodule_search_locations:
            # libxtwrapper, python-iptables' own helper, sits beside the package.
            site = os.path.dirname(list(spec.submodule_search_locations)[0])
            environ["IPTABLES_LIBDIR"] = f"{libdir}:{site}"
        return


def _without_setuptools_distutils_shim():
    """python-iptables asks distutils for one path. In a venv pip made,
    setuptools' shim (a .pth run at every start) answers with setuptools'
    own distutils, which imports pkg_resources: 0.24 s of every cold
    `berth up`. Without the shim, distutils is the stdlib's (3.11), or
    missing and python-iptables falls back to sysconfig (3.12+)."""
    hack = sys.modules.get("_distutils_hack")
    remove = getattr(hack, "remove_shim", None)
    if remove is not None and "distutils" not in sys.modules:
        remove()


@contextlib.contextmanager
def _libraries_found_in_libdirs():
    """python-iptables looks up libc, libip4tc and libip6tc with ctypes'
    find_library, which runs `ldconfig -p` each time: four processes on
    every cold `berth up`, taking CPU from the dockerd starting beside it.
    While it is imported, a name is first looked for as lib<name>.so.<N>
    in the usual library directories."""
    import ctypes.util
    import glob

    original = ctypes.util.find_library

    def find_library(name):
        for libdir in LIBDIRS:
            found = sorted(glob.glob(os.path.join(libdir, f"lib{glob.escape(name)}.so.[0-9]*")), key=len)
            if found:
                return os.path.basename(found[0])
        return original(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original


def _iptc():
    if "iptc" not in sys.modules:
        _point_iptc_at_its_libraries()
        _without_setuptools_distutils_shim()
    try:
        with _libraries_found_in_libdirs():
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
    net = ipaddress.ip_network(value.lstrip("!"), strict=False)
    if net.prefixlen == 0 and not neg:
        return ""
    return ("!" if neg else "") + str(net)


def _read_matches(r):
    found = {"ctstate": "", "comment": "", "owner": "", "rpfilter": False, "cgroup": "", "icmp6": ""}
    for m in r.matches:
        params = m.get_all_parameters()
        if m.name == "conntrack":
            found["ctstate"] = ",".join(params.get("ctstate", []))
        elif m.name == "comment":
            found["comment"] = " ".join(params.get("comment", []))
        elif m.name == "owner":
            found["owner"] = "".join(params.get("uid-owner", [])).split("-")[0]  # "1001" or "1001-1001"
        elif m.name == "rpfilter":
            found["rpfilter"] = "invert" in params
        elif m.name == "icmp6":
            found["icmp6"] = "".join(params.get("icmpv6-type", []))
        elif m.name == "cgroup":
            found["cgroup"] = "".join(params.get("path", []))
    return found


def _norm_iface(value):
    return ("!" + value[1:]) if value and value.startswith("!") else (value or "")


def _to_key(r, table, chain, ip6=False):
    return Rule(table, chain, r.target.name if r.target else "", _norm_net(r.src), _norm_net(r.dst),
                in_iface=_norm_iface(r.in_interface), out_iface=_norm_iface(r.out_interface), ip6=ip6,
                **_read_matches(r))


def _build(iptc, rule):
    r = iptc.Rule6() if rule.ip6 else iptc.Rule()
    if rule.src:
        r.src = rule.src
    if rule.dst:
        r.dst = rule.dst
    if rule.in_iface:
        r.in_interface = rule.in_iface
    if rule.out_iface:
        r.out_interface = rule.out_iface
    if rule.ctstate:
        m = r.create_match("conntrack")
        m.ctstate = rule.ctstate
    if rule.owner:
        m = r.create_match("owner")
        m.uid_owner = rule.owner
    if rule.icmp6:
        r.protocol = "icmpv6"
        m = r.create_match("icmp6")
        m.icmpv6_type = rule.icmp6
    if rule.rpfilter:
        m = r.create_match("rpfilter")
        m.invert = ""
    if rule.cgroup:
        m = r.create_match("cgroup")  # revision 2: a cgroup2 path, resolved when the rule is added
        m.path = rule.cgroup
    if rule.comment:
        m = r.create_match("comment")
        m.comment = rule.comment
    r.target = iptc.Target(r, rule.target)
    return r


@contextlib.contextmanager
def _translated(iptc, doing):
    try:
        with _without_libxtables_warnings():
            yield
    except iptc.IPTCError as e:
        raise NetworkError(f"iptables refused {doing}: {e}",
                           hint="check that the kernel has ip_tables and iptable_nat (berth doctor)") from e


_stderr_lock = threading.Lock()  # the reaper's threads: one redirect of stderr at a time


@contextlib.contextmanager
def _without_libxtables_warnings():
    """libxtables prints "Extension owner revision 0 not supported" on
    stderr the first time a process takes a match of the other family
    (IPv4 after IPv6): harmless, but a second line under every one-line
    error. Its real failures reach berth as exceptions (IPTCError)."""
    with _stderr_lock:
        sys.stderr.flush()
        saved = os.dup(2)
        # A file, not /dev/null: python-iptables then fails to find berth's chains as targets.
        with tempfile.TemporaryFile() as sink:
            try:
                os.dup2(sink.fileno(), 2)
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)


class Firewall:
    """Executes rule plans against the kernel's (legacy) iptables and
    ip6tables tables. `ip6`: whether this host has IPv6 (its rules and
    hooks are then berth's too)."""

    def __init__(self, cfg, ip6=True):
        self.chains = chains(cfg)
        self.ip6 = ip6
        self.iptc = _iptc()

    def _jumps(self):
        return self.chains.jumps(self.ip6)

    def _table(self, name, ip6=False):
        table = (self.iptc.Table6 if ip6 else self.iptc.Table)(name)
        table.refresh()
        return table

    def _is6(self, table):
        return isinstance(table, self.iptc.Table6)

    def _chain(self, table, name, create):
        if table.is_chain(name):
            return self.iptc.Chain(table, name)
        return table.create_chain(name) if create else None

    def _existing(self, table, chain_name):
        chain = self._chain(table, chain_name, create=False)
        if chain is None:
            return None, []
        return chain, [(r, _to_key(r, table.name, chain_name, self._is6(table))) for r in chain.rules]

    def _delete_where(self, table, chain_name, pred):
        """Delete every rule of the chain whose key matches; returns how many.

        iptc frees a table's rules on each autocommit, so rules read before a
        delete must not be used after it: read afresh, delete one, repeat.
        """
        deleted = 0
        while True:
            table.refresh()
            chain = self._chain(table, chain_name, create=False)
            victim = None if chain is None else next(
                (r for r in chain.rules if pred(_to_key(r, table.name, chain_name, self._is6(table)))), None)
            if victim is None:
                return deleted
            chain.delete_rule(victim)
            deleted += 1

    def _ensure_jumps(self):
        """Hook berth's chains in where they are not; True if any was missing."""
        hooked = False
        for jump in self._jumps():
            table = self._table(jump.table, jump.ip6)
            self._chain(table, jump.target, create=True)
            builtin = self.iptc.Chain(table, jump.chain)
            if not any(_to_key(r, jump.table, jump.chain, jump.ip6) == jump for r in builtin.rules):
                # First, so a host's own DROP rules further down do not
                # shadow berth's ACCEPTs for its users.
                builtin.insert_rule(_build(self.iptc, jump))
                log.info("hooked %s into %s/%s%s", jump.target, jump.table, jump.chain, " (IPv6)" * jump.ip6)
                hooked = True
        return hooked

    def ensure_user(self, user, planned, force=False):
        """Make the user's rules exactly `planned`. Returns True if anything changed.
        `force`: written again even where they are as planned (a cgroup they
        name was made again: the kernel resolved the old one's path)."""
        with xtables_lock(), _translated(self.iptc, f"the rules of {user}"):
            return self._ensure_user(user, planned, force)

    def _ensure_user(self, user, planned, force):
        comment = user_comment(user)
        changed = self._ensure_jumps()
        for ip6, table_name, chain_name in dict.fromkeys((r.ip6, r.table, r.chain) for r in planned):
            want = [r for r in planned if (r.ip6, r.table, r.chain) == (ip6, table_name, chain_name)]
            table = self._table(table_name, ip6)
            chain, existing = self._existing(table, chain_name)
            have = [key for _, key in existing if key.comment == comment]
            if have == want and not force:
                continue
            self._delete_where(table, chain_name, lambda k: k.comment == comment)
            for rule in want:
                chain.append_rule(_build(self.iptc, rule))
            changed = True
            log.info("set %d rule(s) for %s in %s/%s%s", len(want), user, table_name, chain_name,
                     " (IPv6)" * ip6)
        return changed

    def rewrite(self, plans):
        """Write again the rules of every user in `plans` ({user: planned})
        who has rules now, under one hold of the lock (a user whose rules
        went meanwhile, by a `down`, gets none back). Returns who was rewritten."""
        with xtables_lock(), _translated(self.iptc, "rewriting berth's rules"):
            present = set(self._rules_by_user())
            done = [user for user in sorted(plans) if user in present]
            for user in done:
                self._ensure_user(user, plans[user], force=True)
        return done

    def remove_user(self, user):
        """Delete every rule carrying the user's comment; drop berth's chains once empty."""
        comment = user_comment(user)
        removed = 0
        with xtables_lock(), _translated(self.iptc, f"removing the rules of {user}"):
            for jump in self._jumps():
                table = self._table(jump.table, jump.ip6)
                removed += self._delete_where(table, jump.target, lambda k: k.comment == comment)
                table.refresh()
                chain, rest = self._existing(table, jump.target)
                if chain is not None and not rest:
                    self._remove_chain(table, jump)
        if removed:
            log.info("removed %d rule(s) of %s", removed, user)
        return removed

    def _remove_chain(self, table, jump):
        self._delete_where(table, jump.chain, lambda k: k == jump)
        table.refresh()
        chain = self.iptc.Chain(table, jump.target)
        chain.flush()
        chain.delete()
        log.info("removed the empty chain %s/%s%s", jump.table, jump.target, " (IPv6)" * jump.ip6)

    def rules_by_user(self):
        """{user: [Rule, ...]} for every rule in berth's chains, in the order
        of the jumps (the order plan_user_rules gives)."""
        with _translated(self.iptc, "reading berth's rules"):
            return self._rules_by_user()

    def _rules_by_user(self):
        found = {}
        for jump in self._jumps():
            _, existing = self._existing(self._table(jump.table, jump.ip6), jump.target)
            for _, key in existing:
                if key.comment.startswith("berth:"):
                    found.setdefault(key.comment.split(":", 1)[1], []).append(key)
        return found

    def jumps_in_place(self):
        """Every hook into berth's chains is there (a flush of the built-in
        chains removes them and leaves berth's chains unreached)."""
        with _translated(self.iptc, "reading the hooks into berth's chains"):
            for jump in self._jumps():
                table = self._table(jump.table, jump.ip6)
                if not any(_to_key(r, jump.table, jump.chain, jump.ip6) == jump
                           for r in self.iptc.Chain(table, jump.chain).rules):
                    return False
        return True

    def users_with_rules(self):
        """Users who have rules in berth's chains."""
        return set(self.rules_by_user())
