"""`berth doctor`: one line per check of the host and the install, each
non-ok line with the fix. Each check gathers a fact or two and judges it;
a check that cannot run says so rather than taking the others down."""

import glob
import ipaddress
import os
import pwd
import re
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass

from berth.core import paths
from berth.core.errors import BerthError
from berth.core.fsutil import check_trusted, read_text
from berth.core.paths import SYSTEM_PATH
from berth.daemon import engine, hostns, pause, subids
from berth.daemon.supervisor import systemd_booted
from berth.lifecycle import hostobjects
from berth.login import pamlayout
from berth.net import bridge
from berth.ops import install
from berth.proxy import control

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""

    def to_json(self):
        return asdict(self)


def _version(binary, args=("--version",)):
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=10)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else "?"


def check_binaries(cfg):
    out = []
    search = os.environ.get("PATH", SYSTEM_PATH) + ":" + SYSTEM_PATH
    for name in (cfg.daemon.dockerd, "containerd", "runc"):
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name, path=search)
        if found:
            out.append(Check(os.path.basename(name), OK, f"{_version(found)} ({found})"))
        else:
            out.append(Check(os.path.basename(name), FAIL, f"{name} not found",
                             "apt-get install docker.io (or set [daemon].dockerd)"))
    try:
        recipe = pause.find_recipe()
        out.append(Check("pause image", OK, f"static {recipe.binary} → {recipe.tag}"))
    except BerthError as e:
        out.append(Check("pause image", FAIL, e.message, "apt-get install catatonit"))
    return out


def check_kernel():
    out = []
    has_bridge = os.path.isdir("/sys/module/bridge") or os.path.isdir("/sys/class/net/docker0/bridge")
    out.append(Check("kernel: bridge", OK if has_bridge else WARN,
                     "bridge support loaded" if has_bridge else "the bridge module is not loaded",
                     "" if has_bridge else "modprobe bridge"))
    with open("/proc/filesystems") as f:
        overlay = "overlay" in f.read()
    out.append(Check("kernel: overlayfs", OK if overlay else FAIL,
                     "overlay filesystem available" if overlay
                     else "no overlay filesystem (dockerd's overlay2 needs it)",
                     "" if overlay else "modprobe overlay"))
    try:
        from berth.net.firewall import _iptc
        iptc = _iptc()
        iptc.Table(iptc.Table.NAT).refresh()
        out.append(Check("kernel: netfilter NAT", OK, "iptables nat table usable (legacy backend, via libiptc)"))
    except Exception as e:  # any failure here is the finding
        out.append(Check("kernel: netfilter NAT", FAIL, f"the nat table is not usable: {e}",
                         "modprobe iptable_nat; apt-get install iptables"))
    return out


def nft_forward_policy(text):
    """The policy of FORWARD in `iptables-nft -S FORWARD` output, or None."""
    m = re.search(r"^-P FORWARD (\w+)", text, re.M)
    return m.group(1) if m else None


def check_iptables_backend(cfg):
    out = []
    iptables = shutil.which("iptables", path=SYSTEM_PATH)
    if not iptables:
        return [Check("iptables backend", WARN, "no iptables command", "apt-get install iptables")]
    version = _version(iptables)
    backend = "nf_tables" if "nf_tables" in version else "legacy"
    out.append(Check("iptables backend", OK, f"{version}; berth writes the legacy tables (libiptc)"))
    nft = shutil.which("iptables-nft", path=SYSTEM_PATH)
    if backend == "nf_tables" and nft:
        r = subprocess.run([nft, "-S", "FORWARD"], capture_output=True, text=True, timeout=10)
        if nft_forward_policy(r.stdout) == "DROP":
            pool = cfg.network.pool
            out.append(Check(
                "nf_tables FORWARD policy", WARN,
                "the nf_tables FORWARD chain drops by default (the system Docker sets that); "
                "berth's ACCEPT rules live in the legacy tables and cannot override it, "
                "so users' containers get no outside network",
                f"iptables-nft -I FORWARD -s {pool} -j ACCEPT && "
                f"iptables-nft -I FORWARD -d {pool} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"))
    return out


def check_pool(cfg):
    berth_links = set(bridge.berth_bridges(cfg.network.bridge_prefix))
    clashes = [(net, link) for net, link in bridge.host_networks_by_link()
               if link not in berth_links and ipaddress.IPv4Network(net).overlaps(cfg.network.pool)]
    if not clashes:
        return [Check("address pool", OK, f"{cfg.network.pool} overlaps no host address or route")]
    net, link = clashes[0]
    return [Check("address pool", FAIL, f"{cfg.network.pool} overlaps {net} on {link or 'a route'}",
                  "choose a free range for [network].pool (berth skips those blocks, but users expect it whole)")]


def check_pam(host, python):
    """berth's hook: present, runnable, and out of reach of users' variables."""
    services = host.pam_services()
    with_block = [s for s in services if install.BEGIN in (host.read(pamlayout.service_path(s)) or "")]
    if not with_block:
        return [Check("PAM lines", WARN, f"no berth lines in {pamlayout.PAM_DIR}", "berth install")]
    out = []
    for service in services:
        for f in pamlayout.findings(service, host.read):
            out.append(Check("PAM layout", FAIL, f"{service}: {f.problem}", f.fix))
    first = pamlayout.service_path(with_block[0])
    hooks = [line for line in pamlayout.parse(host.read(first), first) if pamlayout.hook_command(line)]
    named = pamlayout.hook_command(hooks[0])[0] if hooks else "?"
    if not os.path.exists(named):
        out.append(Check("PAM lines", FAIL, f"{first} runs {named}, which does not exist", "berth install"))
    elif (untrusted := _untrusted(named)) is not None:
        out.append(Check("PAM lines", FAIL, untrusted.message, untrusted.hint))
    elif python and named != python:
        out.append(Check("PAM lines", WARN, f"{first} runs {named}, not this berth's interpreter ({python})",
                         "berth install (rewrites the line)"))
    else:
        out.append(Check("PAM lines", OK, f"{first} runs {named} -I -m berth pam, before any pam_env "
                                          "that reads users' files"))
    return out


def _untrusted(python):
    try:
        install.check_interpreter(python)
    except BerthError as e:
        return e
    return None


def check_install(cfg, root, python):
    host = install.Host(root)
    out = check_pam(host, python)
    for path, what in ((install.ENV_CONF, "pam_env conf"), (install.PROFILE, "profile.d script")):
        ok = install.written_by_berth(host.read(path))
        out.append(Check(what, OK if ok else WARN, path + (" in place" if ok else " missing"),
                         "" if ok else "berth install"))
    out.append(judge_reaper_schedule(
        cron_file=install.written_by_berth(host.read(install.CRON)),
        timer_file=install.written_by_berth(host.read(install.REAP_TIMER)),
        # Under another root (an image being prepared), what runs is not known.
        cron_running=_cron_running() if root == "/" else None, systemd=systemd_booted(),
        timer_enabled=_timer_enabled() if root == "/" else None))
    return out


def judge_reaper_schedule(cron_file, timer_file, cron_running, systemd, timer_enabled):
    """Is anything going to run `berth reap`? A schedule nothing runs reaps
    nobody. `cron_running` / `timer_enabled` are None when not known."""
    if timer_file and systemd:
        if timer_enabled is None:
            return Check("reaper schedule", OK, f"{install.REAP_TIMER} (not checked whether enabled)")
        if timer_enabled:
            return Check("reaper schedule", OK, f"{install.REAP_TIMER}, enabled")
        return Check("reaper schedule", WARN, f"{install.REAP_TIMER} is installed but not enabled: nothing reaps",
                     "systemctl enable --now berth-reap.timer")
    if cron_file:
        if cron_running is None:
            return Check("reaper schedule", OK, f"{install.CRON} (not checked whether cron runs)")
        if cron_running:
            return Check("reaper schedule", OK, f"{install.CRON}, cron running")
        return Check("reaper schedule", WARN, f"{install.CRON} is installed but no cron daemon runs: nothing reaps",
                     "start cron (service cron start) and have it start at boot")
    return Check("reaper schedule", WARN, "no cron file or systemd timer for berth reap", "berth install")


def _cron_running():
    from berth.core import proc

    return any(proc.comm(pid) in ("cron", "crond") for pid in proc.pids())


def _timer_enabled():
    r = subprocess.run(["systemctl", "is-enabled", "--quiet", os.path.basename(install.REAP_TIMER)],
                       capture_output=True)
    return r.returncode == 0


def check_dirs(cfg):
    out = []
    for d in (cfg.paths.state_dir, cfg.paths.run_dir, *_user_run_dirs(cfg)):
        try:
            check_trusted(str(d))
        except FileNotFoundError:
            continue
        except BerthError as e:
            out.append(Check("ownership", FAIL, e.message, e.hint))
    for path, mode in _private_paths(cfg):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_IMODE(st.st_mode) & ~mode:
            out.append(Check("privacy", FAIL, f"{path} has mode {stat.S_IMODE(st.st_mode):o}: other users can "
                                              "read or list it (names, blocks and paths of every user)",
                             f"chmod {mode:o} {path} (the next berth up does it too)"))
    if not out:
        out.append(Check("ownership", OK, f"{cfg.paths.state_dir}, {cfg.paths.run_dir} and {cfg.paths.log_dir} "
                                          "are root's alone; users pass through to their socket only"))
    return out


def _private_paths(cfg):
    """berth's files and directories with the widest mode each may have."""
    state, run, logs = str(cfg.paths.state_dir), str(cfg.paths.run_dir), str(cfg.paths.log_dir)
    found = [(state, paths.TRAVERSE_ONLY), (os.path.join(state, "users"), paths.TRAVERSE_ONLY),
             (os.path.join(state, "leases.json"), 0o600), (os.path.join(state, "locks"), paths.ROOT_ONLY),
             (run, paths.TRAVERSE_ONLY), (logs, paths.ROOT_ONLY), (paths.own_log(logs, paths.BERTH_LOG), 0o600)]
    for d in (paths.locks_dir(cfg), os.path.join(paths.locks_dir(cfg), "users")):
        found.append((d, paths.ROOT_ONLY))
        try:
            found += [(os.path.join(d, n), 0o600) for n in os.listdir(d) if n.endswith(".lock")]
        except FileNotFoundError:
            pass
    for d in _user_run_dirs(cfg):
        found += [(d, paths.TRAVERSE_ONLY), (os.path.join(d, "daemon.json"), 0o600),
                  (os.path.join(d, "dockerd.rec"), 0o600), (os.path.join(d, "sessions"), paths.ROOT_ONLY)]
    return found


def _user_run_dirs(cfg):
    try:
        return [os.path.join(cfg.paths.run_dir, d) for d in sorted(os.listdir(cfg.paths.run_dir))]
    except FileNotFoundError:
        return []


def check_leases_and_orphans(cfg):
    out = []
    try:
        table = hostobjects.lease_table(cfg).read()
    except BerthError as e:
        return [Check("leases", FAIL, e.message, e.hint)]
    out.append(Check("leases", OK, f"{len(table)} lease(s) in {cfg.paths.state_dir}/leases.json"))
    for user in sorted(table):
        try:
            pwd.getpwnam(user)
        except KeyError:
            out.append(Check("orphan lease", WARN, f"{user} holds {table[user].block} but no longer exists",
                             f"berth down --purge --yes {user}"))
    leased = {paths.bridge_name(cfg, lease.uid) for lease in table.values()}
    for name in bridge.berth_bridges(cfg.network.bridge_prefix):
        if name not in leased:
            out.append(Check("orphan bridge", WARN, f"bridge {name} belongs to no lease", "berth reap"))
    try:
        for user in sorted(hostobjects.firewall(cfg).users_with_rules() - set(table)):
            out.append(Check("orphan rules", WARN, f"iptables rules of {user} belong to no lease", "berth reap"))
    except BerthError:
        pass  # reported by the NAT check
    return out


def check_security(cfg):
    """The mode (the config's, and each running daemon's), the kernel's user
    namespaces and berth's subordinate ranges."""
    behind, hardened = [], []
    for name in hostobjects.known_users(cfg, {}):
        rec = hostobjects.supervisor_for(cfg, paths.for_user(cfg, name)).running()
        if rec is not None and rec.mode != cfg.security.mode:
            behind.append(f"{name} ({rec.mode})")
        if rec is not None and rec.mode == "hardened":
            hardened.append(name)
    lagging = [Check("daemon modes", WARN, f"running in another mode than the config's {cfg.security.mode}: "
                                           + ", ".join(behind),
                     "berth down each of them (their next login starts them in the config's mode)")] if behind else []
    info = control.ping(cfg.paths.run_dir)
    served = (control.stats(cfg.paths.run_dir) or {}) if info else {}
    return lagging + _check_mode(cfg) + [judge_proxy(hardened, info, served), _check_confinement(cfg, hardened)] \
        + _check_buildkit(cfg)


def _check_buildkit(cfg):
    """Hardened mode only, and only with a dockerd to ask (a missing one is check_binaries' to say)."""
    from berth.daemon import cgroups

    search = os.environ.get("PATH", SYSTEM_PATH) + ":" + SYSTEM_PATH
    dockerd = shutil.which(cfg.daemon.dockerd, path=search)
    if cfg.security.mode != "hardened" or not dockerd:
        return []
    return [judge_buildkit(_version(dockerd), cgroups.cgroupfs_driver(dict(cfg.daemon_json), systemd_booted()))]


def judge_buildkit(dockerd_version, cgroupfs):
    """Whether hardened users' BuildKit builds pass the proxy (policy.buildkit_refusal),
    from `dockerd --version` and the cgroup driver it will use. Pure. A
    refused buildx build shows only "unable to upgrade to h2c, received
    403", so the administrator hears it here."""
    instead = "tell users to build with DOCKER_BUILDKIT=0 (the classic builder); see docs/buildkit.md"
    m = re.search(r"version (\d+)\.", dockerd_version)
    if not m or int(m.group(1)) >= 23:
        return Check("BuildKit", WARN, f"refused: {dockerd_version or 'dockerd'!s} takes a cgroup for each build "
                                       "step from the build itself, out of berth's sight (BuildKit 0.10 on)",
                     instead)
    if not cgroupfs:
        return Check("BuildKit", WARN, "refused: with systemd's cgroup driver dockerd's BuildKit runs build "
                                       "steps outside the user's slice (moby#45796)", instead)
    return Check("BuildKit", OK, "builds run in each user's dockerd, as the user, in their share, "
                                 "with no entitlement")


def _check_confinement(cfg, hardened):
    """Each hardened dockerd under nodevices' filter and in berth's mount namespace."""
    ns_path = hostns.berth_namespace_path(cfg.paths.run_dir)
    berth_ns = hostns.namespace_id(ns_path) if hostns.is_mount_namespace(ns_path) else None
    unfiltered, outside = [], []
    for name in hardened:
        rec = hostobjects.supervisor_for(cfg, paths.for_user(cfg, name)).running()
        if rec is None:
            continue
        try:
            with open(f"/proc/{rec.pid}/status") as f:
                seccomp = next((line.split()[1] for line in f if line.startswith("Seccomp:")), "0")
            ns = hostns.namespace_id(f"/proc/{rec.pid}/ns/mnt")
        except OSError:
            continue
        if seccomp != "2":
            unfiltered.append(name)
        if ns != berth_ns:
            outside.append(name)
    return judge_confinement(unfiltered, outside)


def judge_confinement(unfiltered, outside):
    """Hardened daemons started by a berth before the device filter, or
    outside berth's mount namespace (their containers' root filesystems
    are visible from the host). Pure."""
    if unfiltered:
        return Check("daemon confinement", WARN, f"dockerd of {', '.join(unfiltered)} may make device nodes "
                                                 "(started by an older berth)",
                     f"berth down {unfiltered[0]} when its containers may stop; its next start is filtered")
    if outside:
        return Check("daemon confinement", WARN, f"dockerd of {', '.join(outside)} runs outside berth's mount "
                                                 "namespace: its containers' root filesystems show on the host",
                     "when no container runs: stop the shared containerd and berth down those users")
    return Check("daemon confinement", OK, "hardened daemons make no device nodes and mount in berth's "
                                           "own namespace")


def judge_proxy(hardened_up, info, served):
    """The policy proxy against the hardened daemons that run. Pure."""
    if info is None:
        if not hardened_up:
            return Check("policy proxy", OK, "not running; berth up starts it for the first hardened user")
        return Check("policy proxy", FAIL, f"not running: the sockets of {', '.join(hardened_up)} refuse",
                     f"berth up {hardened_up[0]} (or any of their logins, or berth reap) starts it again")
    unserved = [u for u in hardened_up if u not in served]
    if unserved:
        return Check("policy proxy", FAIL, f"pid {info['pid']} does not serve {', '.join(unserved)}, whose "
                                           "sockets therefore refuse", f"berth up {unserved[0]}")
    return Check("policy proxy", OK, f"pid {info['pid']} serves {len(served)} user(s) "
                                     f"({info['connections']} open connection(s))")


def check_containerd(cfg):
    """The shared containerd against the daemons that run on it."""
    shared = hostobjects.shared_containerd(cfg)
    if shared is None:
        return [judge_containerd("own", None, [], "")]
    on_it = []
    for name in hostobjects.known_users(cfg, {}):
        rec = hostobjects.supervisor_for(cfg, paths.for_user(cfg, name)).running()
        if rec is not None and rec.containerd:
            on_it.append(name)
    address = shared.address()
    if shared.external:
        state = "external" if engine.listens(address) else "down"
        return [judge_containerd(state, None, on_it, address, external=True)]
    rec = shared.running()
    state = "down" if rec is None else ("up" if engine.listens(address) else "hung")
    return [judge_containerd(state, rec.pid if rec else None, on_it, address)]


def judge_containerd(state, pid, on_it, address, external=False):
    """The shared containerd's state (up, hung, down, external, own) against
    the users whose daemons run on it; `external`: one berth does not run. Pure."""
    name = "shared containerd"
    if state == "own":
        return Check(name, OK, 'not used ([daemon].containerd = "own"): each dockerd runs its own')
    if state in ("up", "external"):
        whose = "berth's, pid %d" % pid if state == "up" else "not berth's"
        return Check(name, OK, f"{address} answers ({whose}); {len(on_it)} daemon(s) on it")
    if state == "hung":
        return Check(name, FAIL, f"pid {pid} runs but {address} does not answer: no user can start, stop or "
                                 "exec a container", f"kill {pid} (containers keep running), then berth reap")
    if not on_it:
        return Check(name, OK, "not running; berth up starts it for the next user")
    return Check(name, FAIL, f"{address} does not answer: containers of {', '.join(on_it)} keep running, "
                             "but none can be started, stopped or exec'd",
                 "systemctl start containerd, or point [daemon].containerd elsewhere" if external else
                 f"berth up {on_it[0]} (or any login, or berth reap) starts it again")


def _check_mode(cfg):
    if cfg.security.mode == "trusted":
        return [Check("security mode", WARN, "trusted: every user's containers run as root on the host, "
                                             "so every user is root-equivalent",
                      'set [security] mode = "hardened" unless the whole team may be root')]
    out = []
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            usable = int(f.read()) > 0
    except (OSError, ValueError):
        usable = os.path.exists("/proc/self/uid_map")
    if not usable:
        out.append(Check("user namespaces", FAIL, "the kernel offers no user namespaces: hardened mode "
                                                  "cannot remap container root",
                         "sysctl user.max_user_namespaces=15000 (and in /etc/sysctl.d/)"))
    else:
        out.append(Check("user namespaces", OK, "available: container root is each user's own uid"))
    out += judge_subids(subids.parse(read_text("/etc/subuid")), subids.parse(read_text("/etc/subgid")))
    out += judge_id_sources(read_text("/etc/nsswitch.conf"), cfg.security.subid_start)
    return out


LOCAL_SOURCES = {"files", "compat", "systemd", "db", "[notfound=return]", "[success=merge]"}


def judge_id_sources(nsswitch, subid_start):
    """berth picks ranges that no listed uid or gid uses; a directory (sssd,
    ldap, winbind) need not list its users, whose ids may lie in a range
    berth would hand out. Pure."""
    for line in nsswitch.splitlines():
        key, _, sources = line.split("#", 1)[0].partition(":")
        if key.strip() == "passwd":
            remote = [s for s in sources.split() if s not in LOCAL_SOURCES and not s.startswith("[")]
            if remote:
                return [Check("id sources", WARN, f"passwd also comes from {', '.join(remote)}, whose users "
                                                  "berth cannot list: a directory uid could fall in a range "
                                                  f"berth hands out (from {subid_start})",
                              "set [security].subid_start above every id range the directory uses "
                              "(sssd's id mapping: see ldap_idmap_range_min/max)")]
    return []


def judge_subids(subuid, subgid):
    """berth's ranges (the 65536-id lines of berth-<uid>) overlap no other line. Pure."""
    out = []
    for path, entries in (("/etc/subuid", subuid), ("/etc/subgid", subgid)):
        ours = [e for e in entries if e.owner.startswith("berth-") and e.count == subids.RANGE]
        for a in ours:
            for b in entries:
                if b.owner != a.owner and a.start < b.start + b.count and b.start < a.start + a.count and \
                        not (b in ours and (b.start, b.owner) < (a.start, a.owner)):  # each pair once
                    out.append(Check("subordinate ids", FAIL,
                                     f"{path}: {a.owner}'s range {a.start}+{a.count} overlaps {b.owner}'s "
                                     f"{b.start}+{b.count}: container ids of two owners would be the same",
                                     "find who added the later of the two lines (berth picks only free ranges); "
                                     "a berth user's range moves when they are purged"))
    if not out:
        out.append(Check("subordinate ids", OK, "berth's ranges overlap no other range"))
    return out


def check_slurm(cfg, root="/", python=None, environ=None):
    """Where [slurm] enabled: berth's wrappers in place, root's, running
    this berth with this config; slurm.conf naming them, where readable."""
    if not cfg.slurm.enabled:
        return []
    environ = os.environ if environ is None else environ
    host = install.Host(root)
    config_path = cfg.source if os.path.isabs(cfg.source) else install.CONFIG
    wanted = install.slurm_wrappers(python or "?", config_path)
    found = {}
    for path in wanted:
        try:
            st = os.stat(host.real(path))
            found[path] = (host.read(path), st.st_uid, stat.S_IMODE(st.st_mode))
        except OSError:
            found[path] = None
    conf = os.path.join(root, (environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf").lstrip("/"))
    try:
        with open(conf) as f:
            conf_text = f.read()
    except OSError:
        conf_text = None

    def expand(value):  # slurm.conf's Prolog= may be a glob (/etc/slurm/prolog.d/*)
        where = os.path.join(root, value.lstrip("/"))
        return [os.path.realpath(p) for p in (glob.glob(where) if glob.has_magic(value) else [where])]

    out = judge_slurm_wrappers(wanted, found, python is not None)
    out.append(judge_slurm_conf(conf, conf_text, expand, root))
    if cfg.security.mode != "hardened":
        out.append(Check("Slurm hooks", WARN, "trusted mode: jobs get no socket of their own, nor their GPUs alone",
                         'set [security] mode = "hardened" (docs/slurm.md)'))
    return out


def judge_slurm_wrappers(wanted, found, know_python=True):
    """wanted: {path: text}; found: {path: (text, uid, mode) or None}."""
    out = []
    for path, text in wanted.items():
        have = found.get(path)
        name = f"Slurm {install.SLURM_HOOKS[os.path.basename(path)]}"
        if have is None:
            out.append(Check(name, FAIL, f"{path} missing", "berth install --slurm"))
        elif have[1] != 0 or have[2] & 0o022:
            out.append(Check(name, FAIL, f"{path} is not root's alone (uid {have[1]}, mode {have[2]:o}), and "
                                         f"root runs it for every job", "berth install --slurm"))
        elif know_python and have[0] != text:
            runs = (have[0] or "").strip().splitlines()[-1:] or ["?"]
            out.append(Check(name, WARN, f"{path} runs '{runs[0]}', not this berth with this config",
                             "berth install --slurm (rewrites it)"))
        else:
            out.append(Check(name, OK, f"{path}, root's"))
    return out


def slurm_conf_keys(text):
    """slurm.conf's key=value pairs, keys in lower case, the last one winning. Pure."""
    keys = {}
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            key, sep, value = word.partition("=")
            if sep:
                keys[key.lower()] = value
    return keys


def judge_slurm_conf(path, text, expand, root="/"):
    """Do slurm.conf's Prolog=, Epilog=, TaskProlog= run berth's wrappers
    (themselves, or a link among a glob's), with PrologFlags=Alloc?
    `expand(pattern)`: the real paths a glob names."""
    if text is None:
        return Check("slurm.conf", WARN, f"{path} not readable here: its hook lines not checked",
                     "run berth doctor with SLURM_CONF=<its path> where it lives elsewhere")
    keys = slurm_conf_keys(text)
    missing = []
    for hook, key in install.SLURM_HOOKS.items():
        ours = os.path.realpath(os.path.join(root, install.SLURM_DIR.lstrip("/"), hook))
        value = keys.get(key.lower(), "")
        if not value or ours not in expand(value):
            missing.append(f"{key}={install.SLURM_DIR}/{hook}")
    if "alloc" not in keys.get("prologflags", "").lower().split(","):
        missing.append("PrologFlags=Alloc")
    if missing:
        return Check("slurm.conf", FAIL, f"{path} lacks {', '.join(missing)}",
                     "add them (berth install --slurm prints them; a site's own prologs: docs/slurm.md)")
    return Check("slurm.conf", OK, f"{path} runs berth's Prolog, Epilog and TaskProlog, with PrologFlags=Alloc")


def check_config(cfg, error):
    if error is not None:
        return [Check("config", FAIL, error.message + "; the other checks use the defaults", error.hint)]
    where = cfg.source if cfg.source != "(defaults)" else "no config file: the defaults"
    return [Check("config", OK, f"{where} (pool {cfg.network.pool}, /{cfg.network.block_prefix} blocks)")]


def run(cfg, root="/", python=None, config_error=None):
    checks = check_config(cfg, config_error)
    for step in (lambda: check_binaries(cfg), check_kernel, lambda: check_iptables_backend(cfg),
                 lambda: check_pool(cfg), lambda: check_security(cfg), lambda: check_containerd(cfg),
                 lambda: check_install(cfg, root, python), lambda: check_slurm(cfg, root, python),
                 lambda: check_dirs(cfg), lambda: check_leases_and_orphans(cfg)):
        try:
            checks += step()
        except Exception as e:  # one broken check must not hide the others
            checks.append(Check("doctor", WARN, f"a check could not run: {type(e).__name__}: {e}",
                                "rerun with --debug and report it"))
    return checks


def render(check):
    line = f"{check.level:<4}  {check.name}: {check.detail}"
    if check.level != OK and check.fix:
        line += f"\n      fix: {check.fix}"
    return line
