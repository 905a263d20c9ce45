"""The config: read once from TOML into frozen dataclasses, validated whole.

An unknown key, a wrong type or a value out of range is refused with the
key's name and what is allowed, so a typo never silently means a default.
"""

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from berth.core.errors import ConfigError
from berth.core.paths import DEFAULT_CONFIG

DEFAULT_PATH = DEFAULT_CONFIG
ENV_VAR = "BERTH_CONFIG"

# Keys of daemon.json that berth itself sets per user; a site may not
# override them through [daemon_json] without breaking isolation.
OWNED_DAEMON_KEYS = frozenset({
    "data-root", "graph", "exec-root", "hosts", "host", "pidfile", "bridge",
    "bip", "fixed-cidr", "iptables", "ip-masq", "default-address-pools",
    "group", "live-restore", "userns-remap",
    "containerd", "containerd-namespace", "containerd-plugins-namespace", "cgroup-parent",
})


@dataclass(frozen=True)
class PathsConfig:
    state_dir: Path = Path("/var/lib/berth")
    run_dir: Path = Path("/run/berth")
    log_dir: Path = Path("/var/log/berth")


@dataclass(frozen=True)
class NetworkConfig:
    pool: ipaddress.IPv4Network = ipaddress.IPv4Network("10.213.0.0/16")
    block_prefix: int = 24
    bridge_prefix: str = "bth"
    chain_prefix: str = "BERTH"


@dataclass(frozen=True)
class UsersConfig:
    min_uid: int = 1000
    # Debian's UID_MAX: above it are nobody (65534) and ranges such as
    # systemd's dynamic users, who never get a daemon.
    max_uid: int = 60000


@dataclass(frozen=True)
class NetContainerConfig:
    name: str = "net"
    image: str = ""  # empty: berth builds its pause image locally


@dataclass(frozen=True)
class ReaperConfig:
    idle_timeout: int = 3600


@dataclass(frozen=True)
class LoginConfig:
    deadline: float = 20.0            # seconds a login waits for a cold daemon
    contact: str = "your administrator"  # whom the user is told to tell when it fails


@dataclass(frozen=True)
class DaemonConfig:
    dockerd: str = "dockerd"
    supervisor: str = "auto"   # auto | direct | systemd
    # "shared": one containerd for every user's dockerd (berth's, or the
    # distribution's where systemd runs it); "own": each dockerd starts its
    # own; or the absolute path of a containerd socket to use.
    containerd: str = "shared"
    start_timeout: float = 30.0
    stop_timeout: float = 30.0
    lock_timeout: float = 120.0


@dataclass(frozen=True)
class SecurityConfig:
    # "hardened": each user's dockerd remaps container root to the user
    # (userns-remap); "trusted": the seed's root daemons, root-equivalent.
    mode: str = "hardened"
    # Where the subordinate ranges berth reserves (65536 ids a user) begin:
    # above useradd's (100000..600100000 by default).
    subid_start: int = 1_000_000_000


@dataclass(frozen=True)
class SlurmConfig:
    # On a Slurm node a job's GPUs are its grant's alone (docs/slurm.md):
    # job sockets get the grant, the login socket gets login_gpus.
    enabled: bool = False
    login_gpus: str = "none"   # none: no GPU outside a job | all: as without Slurm


@dataclass(frozen=True)
class LimitsConfig:
    # What [limits] and [limits.users.<name>] say, checked (limits.parse):
    # {key: value}, and {user: {key: value}}. limits.for_user combines them.
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    users: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    users: UsersConfig = field(default_factory=UsersConfig)
    net_container: NetContainerConfig = field(default_factory=NetContainerConfig)
    reaper: ReaperConfig = field(default_factory=ReaperConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    login: LoginConfig = field(default_factory=LoginConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    daemon_json: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    source: str = "(defaults)"


# --- validators: each takes (value) and returns the converted value or
# raises ValueError with "what is allowed".

# berth makes its [paths] root-only (mode 0711 / 0700); naming one of the
# host's shared directories would lock everybody else out of it.
SHARED_DIRS = frozenset({"/", "/run", "/var", "/var/lib", "/var/log", "/var/run", "/var/tmp", "/tmp",
                         "/etc", "/home", "/usr", "/opt", "/srv", "/mnt", "/root", "/dev/shm"})


def _abs_path(value):
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("an absolute path, e.g. \"/var/lib/berth\"")
    if os.path.normpath(value) in SHARED_DIRS:
        raise ValueError("a directory of berth's own, e.g. \"/var/lib/berth\", not a directory the host shares")
    return Path(value)


def _int_range(lo, hi):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"an integer from {lo} to {hi}")
        return value
    return check


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("a number of seconds greater than 0")
    return float(value)


def _pattern(regex, example):
    compiled = re.compile(regex)

    def check(value):
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"a string matching {regex} (e.g. \"{example}\")")
        return value
    return check


def _pool(value):
    try:
        pool = ipaddress.ip_network(value, strict=True)
    except (TypeError, ValueError):
        raise ValueError("an IPv4 network in CIDR form with no host bits, e.g. \"10.213.0.0/16\"") from None
    if pool.version != 4:
        raise ValueError("an IPv4 network (IPv6 pools are not supported yet)")
    return pool


def _image(value):
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError("an image reference without spaces, or \"\" for berth's own pause image")
    return value


def _choice(*allowed):
    def check(value):
        if value not in allowed:
            raise ValueError("one of " + ", ".join(f'"{a}"' for a in allowed))
        return value
    return check


def _text(value):
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise ValueError("a one-line, non-empty string")
    return value


def _containerd(value):
    if value in ("shared", "own") or (isinstance(value, str) and value.startswith("/") and len(value) <= 107
                                      and not any(c.isspace() for c in value)):
        return value
    raise ValueError('"shared" (one containerd for every user), "own" (each dockerd its own), '
                     'or the absolute path of a containerd socket')


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def _program(value):
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError("a program name on PATH or an absolute path, e.g. \"dockerd\"")
    return value


SCHEMA = {
    "paths": (PathsConfig, {
        "state_dir": _abs_path, "run_dir": _abs_path, "log_dir": _abs_path,
    }),
    "network": (NetworkConfig, {
        "pool": _pool,
        "block_prefix": _int_range(8, 26),
        # The bridge name is prefix + uid and must fit IFNAMSIZ (15): a uid
        # has at most 10 digits, so the prefix gets 5.
        "bridge_prefix": _pattern(r"[a-z][a-z0-9]{0,4}", "bth"),
        "chain_prefix": _pattern(r"[A-Z][A-Z0-9_]{0,11}", "BERTH"),
    }),
    "users": (UsersConfig, {"min_uid": _int_range(1, 2**31), "max_uid": _int_range(1, 2**32 - 2)}),
    "net_container": (NetContainerConfig, {
        "name": _pattern(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", "net"),
        "image": _image,
    }),
    "reaper": (ReaperConfig, {"idle_timeout": _int_range(0, 10**8)}),
    "daemon": (DaemonConfig, {
        "dockerd": _program,
        "supervisor": _choice("auto", "direct", "systemd"),
        "containerd": _containerd,
        "start_timeout": _positive_number,
        "stop_timeout": _positive_number,
        "lock_timeout": _positive_number,
    }),
    "login": (LoginConfig, {"deadline": _positive_number, "contact": _text}),
    "security": (SecurityConfig, {"mode": _choice("hardened", "trusted"),
                                  "subid_start": _int_range(65536, 2**32 - 2**24)}),
    "slurm": (SlurmConfig, {"enabled": _bool, "login_gpus": _choice("none", "all")}),
}


def config_path(environ=None):
    environ = os.environ if environ is None else environ
    return environ.get(ENV_VAR) or DEFAULT_PATH


def load(path=None, environ=None):
    """Read and validate the config; a missing default file means defaults."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(ENV_VAR))
    path = path or config_path(environ)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {path} does not exist",
                              hint=f"create it ('berth config --example > {path}') or unset {ENV_VAR}") from None
        return Config()
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e})") from e
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}",
                          hint="run berth as root or fix the file's permissions") from e
    return parse(data, source=str(path))


def parse(data, source="(config)"):
    """Turn a parsed TOML mapping into a Config, refusing anything unknown."""
    sections = {}
    for name, value in data.items():
        if name == "daemon_json":
            sections[name] = _daemon_json(value, source)
            continue
        if name == "limits":
            sections[name] = _limits(value, source)
            continue
        if name not in SCHEMA:
            allowed = ", ".join(f"[{s}]" for s in [*SCHEMA, "daemon_json", "limits"])
            raise ConfigError(f"{source}: unknown section [{name}]; allowed: {allowed}")
        cls, keys = SCHEMA[name]
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        kwargs = {}
        for key, raw in value.items():
            if key not in keys:
                raise ConfigError(f"{source}: unknown key [{name}].{key}; allowed: {', '.join(keys)}")
            try:
                kwargs[key] = keys[key](raw)
            except ValueError as e:
                raise ConfigError(f"{source}: [{name}].{key} = {raw!r} is invalid; it must be {e}") from e
        sections[name] = cls(**kwargs)
    cfg = Config(**sections, source=source)
    _check_network(cfg.network, source)
    if cfg.users.max_uid < cfg.users.min_uid:
        raise ConfigError(f"{source}: [users].max_uid = {cfg.users.max_uid} is below min_uid = {cfg.users.min_uid}",
                          hint="max_uid is the highest uid berth serves (default 60000)")
    return cfg


def _daemon_json(value, source):
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [daemon_json] must be a table of daemon.json keys")
    owned = sorted(OWNED_DAEMON_KEYS & set(value))
    if owned:
        raise ConfigError(
            f"{source}: [daemon_json].{owned[0]} is set by berth for each user and cannot be overridden",
            hint=f"remove it; berth owns {', '.join(sorted(OWNED_DAEMON_KEYS))}")
    return MappingProxyType(dict(value))


def _limits(value, source):
    from berth.core import limits, users

    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [limits] must be a table")
    per_user = value.get("users", {})
    if not isinstance(per_user, dict) or any(not isinstance(v, dict) for v in per_user.values()):
        raise ConfigError(f"{source}: [limits.users] must hold a table for each user, e.g. [limits.users.alice]")
    try:
        defaults = limits.parse({k: v for k, v in value.items() if k != "users"})
    except ValueError as e:
        raise ConfigError(f"{source}: [limits].{e}") from None
    overrides = {}
    for name, table in per_user.items():
        if not users.is_valid_name(name):
            raise ConfigError(f"{source}: [limits.users.{name}] does not name a user",
                              hint="use a login name such as alice")
        try:
            overrides[name] = MappingProxyType(limits.parse(table))
        except ValueError as e:
            raise ConfigError(f"{source}: [limits.users.{name}].{e}") from None
    return LimitsConfig(MappingProxyType(defaults), MappingProxyType(overrides))


def _check_network(net, source):
    if net.block_prefix <= net.pool.prefixlen:
        raise ConfigError(
            f"{source}: [network].block_prefix = {net.block_prefix} must be longer than the pool's "
            f"/{net.pool.prefixlen} ({net.pool}), so the pool holds more than one block")


def example_text():
    from importlib import resources

    return resources.files("berth").joinpath("data/berth.toml").read_text()
