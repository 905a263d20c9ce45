"""Hardened mode's policy: which Docker API requests a user may make. Pure.

One declarative table per request kind: each row names a field (as dockerd
reads it, case-insensitively), what is refused there, what was refused in
the user's words, and what to do instead. `check` returns the first
refusal, or None; the proxy that will sit in front of each user's dockerd
answers a refusal with HTTP 403 and {"message": "berth: <what>; <instead>"},
which the docker CLI prints as "Error response from daemon: berth: ...".

Whatever no row allows is refused: an endpoint the router does not know
never reaches dockerd. Binds are turned into Mounts of type bind, which
never create their source (dockerd would make a missing source, owned by
the user, anywhere on the host).
"""

import ipaddress
import re
from collections import namedtuple

Refusal = namedtuple("Refusal", "what instead")
# field: a dotted path into the body; refused(value, ctx) -> bool
Rule = namedtuple("Rule", "field refused what instead")
# Who asks: their network half-block, the runtimes the site configured.
# bridge: the user's bridge name, which names their networks' bridges too.
Context = namedtuple("Context", "user_networks runtimes bridge", defaults=(("runc",), ""))
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
IFNAME_MAX = 15  # IFNAMSIZ less its NUL

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPS = frozenset({"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                          "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"})
GPU_DEVICES = re.compile(r"/dev/(nvidia[a-z0-9-]*|nvidia-caps/[a-z0-9-]+|dri/[a-zA-Z0-9_-]+)")
UNCONFINED = re.compile(r"(seccomp|apparmor|systempaths|label)[=:]", re.IGNORECASE)
# As dockerd's router reads a version: /v{version:[0-9.]+}/... ("/v1.41.0/" too).
API_VERSION = re.compile(r"/v([0-9.]*)(?=/)")
# Below 1.24 `POST /containers/{id}/start` takes a HostConfig that nothing
# here reads; the docker CLI has asked for 1.24 or later since 2016.
MIN_API_VERSION = (1, 24)


def _is(value):
    return lambda v, ctx: isinstance(v, str) and v.casefold() == value


def _true(v, ctx):
    return v is True


def _nonempty(v, ctx):
    return bool(v)


def _caps_beyond_default(v, ctx):
    names = {str(c).upper().removeprefix("CAP_") for c in (v or ())}
    return bool(names - DEFAULT_CAPS)


def _security_opts(v, ctx):
    return any(UNCONFINED.match(str(o)) for o in (v or ()))


def _devices(v, ctx):
    return any(not (isinstance(d, dict) and GPU_DEVICES.fullmatch(str(_get(d, "PathOnHost") or "")))
               for d in (v or ()))


def _runtime(v, ctx):
    return bool(v) and v not in ctx.runtimes


def _negative(v, ctx):
    return isinstance(v, (int, float)) and v < 0


def _low_host_port(v, ctx):
    for bindings in (v or {}).values():
        for b in bindings or ():
            port = str(_get(b, "HostPort") or "")
            if port and (not port.split("-")[0].isdigit() or int(port.split("-")[0]) < 1024):
                return True
    return False


def _mounts(v, ctx):
    for m in v or ():
        kind = str(_get(m, "Type") or "").casefold()
        if kind not in ("bind", "volume", "tmpfs"):
            return True
        if _get(m, "BindOptions.CreateMountpoint") is True:
            return True
        driver = _get(m, "VolumeOptions.DriverConfig")
        if driver and (_get(driver, "Name") not in (None, "", "local") or _get(driver, "Options")):
            return True
    return False


def _relabelled_binds(v, ctx):
    """A Binds entry with SELinux relabelling (:z, :Z): root would relabel the user's path."""
    for spec in v or ():
        parts = str(spec).split(":")
        if len(parts) >= 3 and {"z", "Z"} & set(parts[-1].split(",")):
            return True
    return False


def _nonzero(v, ctx):
    return isinstance(v, (int, float)) and v != 0


def _endpoint_addresses(v, ctx):
    """--ip of each network a container joins (a map: network -> endpoint)."""
    return isinstance(v, dict) and any(_address_outside(endpoint, ctx) for endpoint in v.values())


def _address_outside(endpoint, ctx):
    for key in ("IPAMConfig.IPv4Address", "IPAddress"):
        value = _get(endpoint, key)
        if value and not _inside(value, ctx.user_networks):
            return True
    return False


def _not_null(v, ctx):
    return v is not None


SCHEDULING_ULIMITS = frozenset({"rtprio", "rttime", "nice"})
LOG_DRIVERS = frozenset({"json-file", "local", "none"})


def _scheduling_ulimits(v, ctx):
    return any(str(_get(u, "Name") or "").casefold() in SCHEDULING_ULIMITS | {"unreadable"} for u in (v or ()))


def _volume_driver(v, ctx):
    return bool(v) and v != "local"


def _outside_user_networks(v, ctx):
    for config in v or ():
        for key in ("Subnet", "IPRange", "Gateway"):
            value = _get(config, key)
            if value and not _inside(value, ctx.user_networks):
                return True
    return False


def _inside(value, networks):
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return net.version == 4 and net.subnet_of(ipaddress.ip_network(networks))


def _resource_rows(prefix):
    """Rows for container.Resources, which a create body holds in HostConfig
    and an update body (`docker update`) at its top."""
    return (
        Rule(prefix + "Devices", _devices, "devices other than GPUs (/dev/nvidia*, /dev/dri/*)",
             "use --gpus for GPUs; other devices are the administrator's to give"),
        Rule(prefix + "DeviceCgroupRules", _nonempty, "--device-cgroup-rule", "drop it; use --gpus for GPUs"),
        Rule(prefix + "CgroupParent", _nonempty, "--cgroup-parent",
             "drop it: berth places your containers in your own share"),
        Rule(prefix + "OomKillDisable", _true, "--oom-kill-disable", "drop it; set -m to bound the memory"),
        Rule(prefix + "Ulimits", _scheduling_ulimits, "a real-time or nice --ulimit (rtprio, rttime, nice)",
             "drop it: real-time scheduling would starve everyone else on the box"),
        Rule(prefix + "CPURealtimeRuntime", _nonzero, "--cpu-rt-runtime",
             "drop it: real-time scheduling would starve everyone else on the box"),
        Rule(prefix + "CPURealtimePeriod", _nonzero, "--cpu-rt-period", "drop it"),
    )


CREATE = _resource_rows("HostConfig.") + (
    Rule("NetworkingConfig.EndpointsConfig", _endpoint_addresses, "an address outside your own networks (--ip)",
         "leave out --ip, or pick one inside your own networks"),
    Rule("HostConfig.Privileged", _true, "--privileged",
         "run without it: containers get Docker's default capabilities, and --gpus for GPUs"),
    Rule("HostConfig.UsernsMode", _is("host"), "--userns=host",
         "drop it: container root is already you"),
    Rule("HostConfig.NetworkMode", _is("host"), "--net=host",
         "use --net=container:net: your own namespace, with the same fixed ports"),
    Rule("HostConfig.PidMode", _is("host"), "--pid=host",
         "share a container's processes with --pid=container:NAME"),
    Rule("HostConfig.IpcMode", _is("host"), "--ipc=host",
         "use --shm-size (e.g. --shm-size=16g for data loaders), or --ipc=container:NAME"),
    Rule("HostConfig.UTSMode", _is("host"), "--uts=host", "drop it"),
    Rule("HostConfig.CgroupnsMode", _is("host"), "--cgroupns=host", "drop it"),
    Rule("HostConfig.CapAdd", _caps_beyond_default, "capabilities beyond Docker's default set",
         "drop --cap-add: the default set is what a container gets"),
    Rule("HostConfig.SecurityOpt", _security_opts, "a seccomp, apparmor, systempaths or label override",
         "drop --security-opt (no-new-privileges is fine)"),
    Rule("HostConfig.Runtime", _runtime, "a runtime the site has not configured",
         "drop --runtime, or ask the administrator to add it to [daemon_json]"),
    Rule("HostConfig.OomScoreAdj", _negative, "a negative --oom-score-adj",
         "drop it: your containers are not to be spared before others'"),
    Rule("HostConfig.PortBindings", _low_host_port, "publishing a host port below 1024",
         "publish on a port from 1024 up (-p 8080:80)"),
    Rule("HostConfig.Mounts", _mounts, "a mount that is not a plain bind, volume or tmpfs, or that creates "
                                       "its source, or a volume with driver options",
         "bind an existing path (-v /home/you/data:/data), or use a plain named volume"),
    Rule("HostConfig.Binds", _relabelled_binds, "SELinux relabelling of a bind (:z or :Z)",
         "drop :z/:Z (berth would relabel your path as root); label it yourself with chcon if you need to"),
    Rule("HostConfig.VolumeDriver", _volume_driver, "a volume driver other than local",
         "use plain named volumes"),
    Rule("HostConfig.MaskedPaths", _not_null, "unmasked system paths (systempaths=unconfined)",
         "drop it: /proc and /sys stay masked"),
    Rule("HostConfig.ReadonlyPaths", _not_null, "writable system paths (systempaths=unconfined)",
         "drop it: /proc and /sys stay read-only"),
    Rule("HostConfig.LogConfig.Type", lambda v, ctx: bool(v) and v not in LOG_DRIVERS,
         "a log driver that writes outside your daemon (syslog, journald, ...)",
         "drop --log-driver: json-file, local and none are yours"),
)

# What dockerd reads at the top of a create body: container.Config's fields,
# HostConfig and NetworkingConfig. On 20.10 it also takes HostConfig's fields
# from the top level (a deprecated embedding: all of them when HostConfig is
# absent, Memory, MemorySwap, CPUShares, CpusetCpus, VolumeDriver and Cpuset
# even when it is there), which the rows above would never see: such a key
# with a value is refused. Any other key dockerd ignores (docker-java's
# "PortSpecs": null, dockerode's "name"), and is dropped before it is passed on.
CREATE_KEYS = frozenset(k.casefold() for k in (
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
    "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
    "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell",
    "HostConfig", "NetworkingConfig"))
# moby 20.10 api/types/container.HostConfig and its Resources, and the wrapper's Cpuset.
HOST_CONFIG_KEYS = frozenset(k.casefold() for k in (
    "Binds", "ContainerIDFile", "LogConfig", "NetworkMode", "PortBindings", "RestartPolicy", "AutoRemove",
    "VolumeDriver", "VolumesFrom", "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch",
    "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj", "PidMode", "Privileged",
    "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode", "UsernsMode", "ShmSize",
    "Sysctls", "Runtime", "ConsoleSize", "Isolation", "Mounts", "MaskedPaths", "ReadonlyPaths", "Init",
    "CPUShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "BlkioWeightDevice", "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps", "BlkioDeviceReadIOps", "BlkioDeviceWriteIOps", "CPUPeriod", "CPUQuota",
    "CPURealtimePeriod", "CPURealtimeRuntime", "CpusetCpus", "CpusetMems", "Devices", "DeviceCgroupRules",
    "DeviceRequests", "KernelMemory", "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness",
    "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth",
    "Cpuset"))


def create_body_for_dockerd(body):
    """A create body without the top-level keys dockerd ignores (a declared
    rewrite: dockerd would have read nothing of them). Pure; `body` has
    passed `check`."""
    if not isinstance(body, dict):
        return body
    ignored = [k for k in body if k.casefold() not in CREATE_KEYS]
    if not ignored:
        return body
    return type(body)((k, v) for k, v in body.items() if k.casefold() in CREATE_KEYS)

UPDATE = _resource_rows("")

CONNECT = (
    Rule("EndpointConfig", lambda v, ctx: _address_outside(v, ctx), "an address outside your own networks (--ip)",
         "leave out --ip, or pick one inside your own networks"),
)

EXEC = (
    Rule("Privileged", _true, "docker exec --privileged", "run the exec without it"),
)

VOLUME = (
    Rule("Driver", _volume_driver, "a volume driver other than local", "use a plain named volume"),
    Rule("DriverOpts", _nonempty, "volume driver options (type, device, o mount anything as host root)",
         "bind an existing path instead (-v /home/you/data:/data)"),
)

NETWORK = (
    Rule("Driver", lambda v, ctx: bool(v) and v != "bridge", "a network driver other than bridge",
         "drop --driver: your networks are bridges"),
    Rule("Options", _nonempty, "network driver options", "drop --opt"),
    Rule("IPAM.Driver", lambda v, ctx: bool(v) and v != "default", "an IPAM driver", "drop --ipam-driver"),
    Rule("IPAM.Config", _outside_user_networks, "a subnet, IP range or gateway outside your own networks",
         "leave out --subnet (your own address pool applies), or pick one inside it"),
    Rule("ConfigFrom", _nonempty, "--config-from", "drop it"),
    # berth plans IPv4 blocks only: an IPv6 subnet would be the user's own
    # choice, routed by the host with no block of theirs to keep others out
    # of (isolation by interface still holds for link-local addresses).
    Rule("EnableIPv6", _true, "an IPv6 network (--ipv6)",
         "leave out --ipv6: your networks are IPv4, in your own block (containers keep IPv6 link-local)"),
)

# Every route a user's request may take, as dockerd's router names them
# (api/server/router/*): anything else is refused, whatever dockerd would do
# with it. C: a container or exec id (links make "/" in one an alias), I: an
# image reference (with "/" and ":"), N: a network or volume.
C, I, N = r"[^/]+", r".+", r"[^/]+"  # noqa: E741 - dockerd's own letters
ROUTES = tuple((frozenset(methods.split()), re.compile(pattern)) for methods, pattern in (
    ("GET HEAD", "/_ping"), ("GET", "/events"), ("GET", "/info"), ("GET", "/version"), ("GET", "/system/df"),
    ("POST", "/auth"),
    ("GET", "/containers/json"), ("POST", "/containers/create"), ("POST", "/containers/prune"),
    ("GET", f"/containers/{C}/(json|export|changes|top|logs|stats|attach/ws)"),
    ("GET HEAD PUT", f"/containers/{C}/archive"),
    ("POST", f"/containers/{C}/(kill|pause|unpause|restart|start|stop|wait|resize|attach|exec|rename|update)"),
    ("DELETE", f"/containers/{C}"), ("POST", "/commit"),
    ("GET", f"/exec/{C}/json"), ("POST", f"/exec/{C}/(start|resize)"),
    ("GET", "/images/(json|search|get)"), ("GET", f"/images/{I}/(get|history|json)"),
    ("POST", "/images/(load|create|prune)"), ("POST", f"/images/{I}/(push|tag)"), ("DELETE", f"/images/{I}"),
    ("GET", f"/distribution/{I}/json"),
    ("GET", "/networks"), ("GET", f"/networks/{N}"), ("POST", "/networks/(create|prune)"),
    ("POST", f"/networks/{N}/(connect|disconnect)"), ("DELETE", f"/networks/{N}"),
    ("GET", "/volumes"), ("GET", f"/volumes/{N}"), ("POST", "/volumes/(create|prune)"), ("DELETE", f"/volumes/{N}"),
    ("POST", "/build"), ("POST", "/build/(prune|cancel)"),
    # BuildKit: the CLI's session (h2c, dockerd asks it for files) and buildx's gRPC control API.
    ("POST", "/session"), ("POST", "/grpc"),
    ("GET", "/plugins"), ("GET", f"/plugins/{N}/json"),
))


def routed(method, path):
    return any(method in methods and pattern.fullmatch(path) for methods, pattern in ROUTES)


# Endpoints no user may reach, whatever the body: managed plugins run as
# real root; swarm is not a per-user daemon's business.
# Reading them is not: `docker inspect NAME` asks for a plugin of that name
# after a container, image, network and volume, and must get dockerd's own
# "No such object" (a user's daemon has no plugins: installing one is refused).
PLUGIN_READS = re.compile(r"/plugins(/[^/]+/json)?")
REFUSED_PREFIXES = ("/plugins", "/swarm", "/services", "/tasks", "/secrets", "/configs", "/nodes")


def _get(obj, dotted):
    for part in dotted.split("."):
        if obj is None:
            return None
        if hasattr(obj, "field"):
            obj = obj.field(part)
        elif isinstance(obj, dict):
            obj = next((v for k, v in obj.items() if k.casefold() == part.casefold()), None)
        else:
            return None
    return obj


def canonical(target):
    """(path without the /v1.xx prefix, query dict) of a request target, or a
    Refusal for one that is not written the one way berth checks."""
    raw, _, query = target.partition("?")
    path = _go_path_unescape(raw)
    if path is None or not path.startswith("/") or "\\" in path:
        return Refusal(f"the request path {raw!r}", "send a plain API path")
    m = API_VERSION.match(path)
    if m:
        version = tuple(int(p) for p in m.group(1).split(".") if p.isdigit())
        if not re.fullmatch(r"[0-9]+\.[0-9]+", m.group(1)) or version < MIN_API_VERSION:
            return Refusal(f"API version {m.group(1)!r}", "use API version 1.24 or later, written as /v1.41/")
        path = path[m.end():]
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        return Refusal(f"the request path {target.split('?')[0]!r}", "send the canonical API path")
    return path.rstrip("/") or "/", go_query(query)


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def go_query(query):
    """The query as Go's url.ParseQuery gives dockerd its values: a pair
    with a ";" or a malformed escape is dropped (not kept literally, as
    Python's parse_qs does), "+" is a space, each %XX decoded once. So the
    first value berth reads is the first dockerd reads."""
    values = {}
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        key, _, value = pair.partition("=")
        key, value = _go_query_unescape(key), _go_query_unescape(value)
        if key is None or value is None:
            continue
        values.setdefault(key, []).append(value)
    return values


def _go_query_unescape(text):
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return None
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text.replace("+", " "))
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


def _go_path_unescape(path):
    """The path as Go's net/url gives dockerd's router (URL.Path): each %XX
    decoded once, and None for a malformed escape (Go answers 400). Routing
    and checking then see what dockerd sees: docker-py and docker-java send
    `testcontainers%2Fryuk`, and an encoded "/" in a container's or
    network's segment becomes a path no route of berth's takes."""
    if "%" not in path:
        return path
    if re.search(r"%(?![0-9A-Fa-f]{2})", path):
        return None
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), path)  # a byte a character, as the target came


def check(method, target, body, ctx):
    """The first refusal for a request, or None. `body`: the parsed JSON (a
    CaseFoldDict) or None."""
    found = canonical(target)
    if isinstance(found, Refusal):
        return found
    path, query = found
    if method == "OPTIONS":
        # A CORS preflight: dockerd answers any path 200 and does nothing
        # (moby api/server/router/system: NewOptionsRoute("{anything:.*}", optionsHandler)).
        return None
    if path.startswith(REFUSED_PREFIXES) and not (method == "GET" and PLUGIN_READS.fullmatch(path)):
        return Refusal(f"the {path.split('/')[1]} API", "plugins and swarm are not for per-user daemons")
    if not routed(method, path):
        return Refusal(f"{method} {path}", "berth passes the Docker API the docker CLI uses, and no other")
    rules = ()
    if method == "POST" and path == "/containers/create":
        hosts = sorted(k for k, v in (body or {}).items() if k.casefold() in HOST_CONFIG_KEYS and v is not None)
        if hosts:
            return Refusal(f"the HostConfig field {hosts[0]!r} outside HostConfig, at the top of the body",
                           "put it in HostConfig, as the docker CLI does")
        rules = CREATE
    elif method == "POST" and is_exec_create(path):
        rules = EXEC
    elif method == "POST" and UPDATE_PATH.fullmatch(path):
        rules = UPDATE
    elif method == "POST" and CONNECT_PATH.fullmatch(path):
        rules = CONNECT
    elif method == "POST" and path == "/volumes/create":
        rules = VOLUME
    elif method == "POST" and path == "/networks/create":
        rules = NETWORK
    elif method == "POST" and path == "/build":
        return _check_build(query)
    elif method == "POST" and path == "/images/create" and any(v != "-" for v in query.get("fromSrc", ())):
        return Refusal("an import from a URL (dockerd would fetch it as root)",
                       "fetch it yourself and pipe it: curl -L URL | docker import - NAME")
    for rule in rules:
        value = _get(body, rule.field)
        if value is not None and rule.refused(value, ctx):
            return Refusal(rule.what, rule.instead)
    return None


UPDATE_PATH = re.compile(f"/containers/{C}/update")
CONNECT_PATH = re.compile(f"/networks/{N}/connect")


def is_exec_create(path):
    return re.fullmatch(f"/containers/{C}/exec", path) is not None


def reads_body(method, path):
    """Whether the proxy must read this request's body whole and check it."""
    return method == "POST" and (path in ("/containers/create", "/volumes/create", "/networks/create")
                                 or is_exec_create(path) or UPDATE_PATH.fullmatch(path) is not None
                                 or CONNECT_PATH.fullmatch(path) is not None)


BUILD_REFUSED = (("cgroupparent", "--cgroup-parent"), ("ulimits", "--ulimit"), ("securityopt", "--security-opt"),
                 ("isolation", "--isolation"))


# `remote` values that name no place to fetch from: BuildKit's context comes
# through the client's session, or in a second request (`docker build - <
# ctx.tar`) (moby builder/builder-next/builder.go; docker/cli build_buildkit.go).
SESSION_REMOTES = frozenset({"client-session", "upload-request"})


def _check_build(query):
    if any(v.casefold() == "host" for v in query.get("networkmode", ())):
        return Refusal("a build with --network=host", "build without it (RUN steps get the default network)")
    if any(v and v not in SESSION_REMOTES for v in query.get("remote", ())):
        # dockerd would fetch it as root from the host's network namespace,
        # where berth's network isolation lets root reach every user's containers.
        return Refusal("a build from a URL or git remote (dockerd would fetch it as root)",
                       "fetch it yourself and build the directory: git clone URL dir && docker build dir")
    for key, flag in BUILD_REFUSED:
        values = [v for k in query if k.casefold() == key for v in query[k] if not _empty_parameter(key, v)]
        if key == "ulimits" and not any(_scheduling_ulimits(_json_list(v), None) for v in values):
            continue  # nofile and the like, as `docker run --ulimit` may
        if values:
            return Refusal(f"a build with {flag}", "build without it")
    return None


# dockerd's API version from which its BuildKit (v0.10, Docker 23) takes a
# cgroup parent and ulimits for each build step from the build's own
# definition (LLB ExecOp meta). That definition reaches dockerd through
# /grpc, or from a `# syntax=` frontend image a Dockerfile names, neither
# of which the proxy can read: from there on, BuildKit is refused whole.
BUILDKIT_UNCHECKED_FROM = (1, 42)


def asks_buildkit(method, path, query):
    """Whether a request drives dockerd's BuildKit: buildx's gRPC API, or
    a build with version=2 (dockerd reads the first `version`)."""
    return method == "POST" and (path == "/grpc" or (path == "/build" and query.get("version", [""])[0] == "2"))


def buildkit_refusal(api_version, cgroup_driver):
    """A refusal for a request that drives BuildKit (asks_buildkit), or None,
    from what dockerd says of itself: its `ApiVersion` ("1.41") and its
    `CgroupDriver` ("cgroupfs")."""
    instead = "build with the classic builder: DOCKER_BUILDKIT=0 docker build ..."
    parts = tuple(int(p) for p in str(api_version or "").split(".") if p.isdigit())
    if len(parts) != 2 or parts >= BUILDKIT_UNCHECKED_FROM:
        return Refusal(f"BuildKit on this dockerd (API {api_version or 'unknown'}): a build may place its steps "
                       "in a cgroup of its own choosing, out of your share, where berth cannot see it", instead)
    if cgroup_driver != "cgroupfs":
        # BuildKit's runc gets "<parent>:docker:<id>" as a path and makes it
        # beside dockerd's own cgroup, not in the user's slice (moby#45796).
        return Refusal(f"BuildKit on a dockerd with the {cgroup_driver or 'unknown'} cgroup driver: its build steps "
                       "would run outside your share", instead)
    return None


def _empty_parameter(key, value):
    """A build parameter every moby client up to v27 sends for an unset
    option (`cgroupparent=`, `ulimits=null`): absent, as dockerd reads it.
    Only what dockerd itself reads as nothing: `cgroupparent=null` is a
    cgroup named null, and JSON only where dockerd decodes JSON."""
    if key == "ulimits":
        return value in ("", "null", "[]")
    return value == ""


def _json_list(value):
    from berth.proxy import apijson  # as dockerd decodes it: a key given twice is refused there

    try:
        parsed = apijson.loads(value.encode("utf-8", "surrogateescape"))
    except apijson.BadBody:
        return [{"Name": "unreadable"}] if value else []
    if not isinstance(parsed, list):
        return [{"Name": "unreadable"}]
    return [u if isinstance(u, dict) else {"Name": "unreadable"} for u in parsed]


def name_bridge(body, bridge, suffix):
    """A network create body whose bridge is named `<bridge>.<suffix>`:
    berth's anti-spoofing rules match the user's networks by that prefix
    (dockerd would name it br-<id>, like any other daemon's). Pure; the
    body has passed `check` (no options of the user's own)."""
    driver = _get(body, "Driver")
    name = f"{bridge}.{suffix}"[:IFNAME_MAX]
    if not bridge or driver not in (None, "", "bridge") or len(name) < len(bridge) + 3:
        return body  # no room for a name of its own: dockerd's br-<id>
    out = {k: v for k, v in body.items() if k.casefold() != "options"}
    out["Options"] = {BRIDGE_NAME_OPTION: name}
    return out


def binds_to_mounts(host_config):
    """HostConfig with the host paths of its Binds as Mounts: a bind of
    type "bind" never creates its source. Named volumes stay in Binds, as
    the client sent them (dockerd makes a volume, never a host path, and
    `docker inspect` then shows what the client asked for). Pure; returns
    a new dict."""
    binds = _get(host_config, "Binds") or []
    mounts = list(_get(host_config, "Mounts") or [])
    # A destination alone (`-v /data` from compose 1.29) is an anonymous volume to dockerd: no host path either.
    volumes = [spec for spec in binds if not str(spec).startswith("/") or ":" not in str(spec)]
    for spec in binds:
        source, _, rest = str(spec).partition(":")
        if spec in volumes:
            continue
        target, _, options = rest.partition(":")
        opts = set(options.split(",")) if options else set()
        mount = {"Type": "bind", "Source": source, "Target": target, "ReadOnly": "ro" in opts}
        propagation = opts & {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
        if propagation:
            mount["BindOptions"] = {"Propagation": propagation.pop()}
        mounts.append(mount)
    out = {k: v for k, v in host_config.items() if k.casefold() not in ("binds", "mounts")}
    if volumes:
        out["Binds"] = volumes
    if mounts:
        out["Mounts"] = mounts
    return out
