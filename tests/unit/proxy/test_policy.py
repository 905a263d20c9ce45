"""Each row of hardened mode's policy table, refused and allowed; the body
read as dockerd reads it; paths written one way only."""

import pytest

from berth.proxy import apijson, policy

CTX = policy.Context(user_networks="10.213.3.128/25", runtimes=("runc", "nvidia"))


def create(host_config, **top):
    return apijson.loads(apijson.dumps({"Image": "busybox", **top, "HostConfig": host_config}))


# (a HostConfig refused, one allowed, words of the refusal) for every row of CREATE
CREATE_CASES = {
    "HostConfig.Privileged": ({"Privileged": True}, {"Privileged": False}, "--privileged"),
    "HostConfig.UsernsMode": ({"UsernsMode": "host"}, {"UsernsMode": ""}, "--userns=host"),
    "HostConfig.NetworkMode": ({"NetworkMode": "host"}, {"NetworkMode": "container:net"}, "--net=host"),
    "HostConfig.PidMode": ({"PidMode": "host"}, {"PidMode": "container:web"}, "--pid=host"),
    "HostConfig.IpcMode": ({"IpcMode": "host"}, {"IpcMode": "private", "ShmSize": 2**34}, "--ipc=host"),
    "HostConfig.UTSMode": ({"UTSMode": "host"}, {}, "--uts=host"),
    "HostConfig.CgroupnsMode": ({"CgroupnsMode": "host"}, {"CgroupnsMode": "private"}, "--cgroupns=host"),
    "HostConfig.CapAdd": ({"CapAdd": ["CAP_SYS_ADMIN"]}, {"CapAdd": ["net_bind_service", "CAP_CHOWN"]},
                          "capabilities beyond"),
    "HostConfig.SecurityOpt": ({"SecurityOpt": ["seccomp=unconfined"]}, {"SecurityOpt": ["no-new-privileges"]},
                               "seccomp"),
    "HostConfig.Devices": ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]},
                           {"Devices": [{"PathOnHost": "/dev/nvidia0"}, {"PathOnHost": "/dev/dri/renderD128"}]},
                           "devices other than GPUs"),
    "HostConfig.DeviceCgroupRules": ({"DeviceCgroupRules": ["c *:* rwm"]}, {"DeviceCgroupRules": []},
                                     "--device-cgroup-rule"),
    "HostConfig.CgroupParent": ({"CgroupParent": "/"}, {"CgroupParent": ""}, "--cgroup-parent"),
    "HostConfig.Runtime": ({"Runtime": "kata"}, {"Runtime": "nvidia"}, "runtime"),
    "HostConfig.OomScoreAdj": ({"OomScoreAdj": -500}, {"OomScoreAdj": 200}, "--oom-score-adj"),
    "HostConfig.OomKillDisable": ({"OomKillDisable": True}, {"OomKillDisable": False}, "--oom-kill-disable"),
    "HostConfig.PortBindings": ({"PortBindings": {"80/tcp": [{"HostPort": "80"}]}},
                                {"PortBindings": {"80/tcp": [{"HostPort": "8080"}, {"HostPort": ""}]}},
                                "below 1024"),
    "HostConfig.Mounts": ({"Mounts": [{"Type": "bind", "Source": "/x", "Target": "/x",
                                       "BindOptions": {"CreateMountpoint": True}}]},
                          {"Mounts": [{"Type": "bind", "Source": "/home/a", "Target": "/a"},
                                      {"Type": "tmpfs", "Target": "/t"}]}, "creates its source"),
    "HostConfig.Binds": ({"Binds": ["/home/a:/a:ro,Z"]}, {"Binds": ["/home/a:/a:ro", "/home/z:/z", "vol:/v:nocopy"]},
                         "SELinux relabelling"),
    "HostConfig.VolumeDriver": ({"VolumeDriver": "nfs-plugin"}, {"VolumeDriver": "local"}, "volume driver"),
    "HostConfig.MaskedPaths": ({"MaskedPaths": []}, {"MaskedPaths": None}, "systempaths=unconfined"),
    "HostConfig.ReadonlyPaths": ({"ReadonlyPaths": []}, {}, "systempaths=unconfined"),
    "HostConfig.Ulimits": ({"Ulimits": [{"Name": "rtprio", "Soft": 99, "Hard": 99}]},
                           {"Ulimits": [{"Name": "nofile", "Soft": 65536, "Hard": 65536}]}, "real-time"),
    "HostConfig.LogConfig.Type": ({"LogConfig": {"Type": "syslog"}}, {"LogConfig": {"Type": "json-file"}},
                                  "log driver"),
    "HostConfig.CPURealtimeRuntime": ({"CPURealtimeRuntime": 950000}, {"CPURealtimeRuntime": 0}, "--cpu-rt-runtime"),
    "HostConfig.CPURealtimePeriod": ({"CPURealtimePeriod": 1000000}, {}, "--cpu-rt-period"),
}

# Rows outside HostConfig: (the whole body refused, one allowed, words)
BODY_CASES = {
    "NetworkingConfig.EndpointsConfig": (
        {"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"n": {"IPAMConfig": {"IPv4Address": "10.213.9.5"}}}}},
        {"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"n": {"IPAMConfig": {"IPv4Address": "10.213.3.130"}}}}},
        "an address outside your own networks"),
}


def test_every_row_of_the_create_table_has_a_case():
    assert {r.field for r in policy.CREATE} == set(CREATE_CASES) | set(BODY_CASES)


@pytest.mark.parametrize("field", sorted(BODY_CASES))
def test_create_rows_outside_host_config(field):
    refused, allowed, words = BODY_CASES[field]
    refusal = policy.check("POST", "/containers/create", apijson.loads(apijson.dumps(refused)), CTX)
    assert refusal is not None and words in refusal.what
    assert policy.check("POST", "/containers/create", apijson.loads(apijson.dumps(allowed)), CTX) is None


@pytest.mark.parametrize("field", sorted(CREATE_CASES))
def test_create_rows(field):
    refused, allowed, words = CREATE_CASES[field]
    r = policy.check("POST", "/v1.41/containers/create", create(refused), CTX)
    assert r is not None and words in r.what and r.instead, (field, r)
    assert policy.check("POST", "/containers/create", create(allowed), CTX) is None, field


def test_keys_are_read_as_dockerd_reads_them():
    # any case of a field name is the field
    r = policy.check("POST", "/containers/create", apijson.loads(b'{"hostconfig": {"PRIVILEGED": true}}'), CTX)
    assert r.what == "--privileged"
    # a key twice in one object, in any case, is refused before any check
    with pytest.raises(apijson.BadBody, match="appears twice"):
        apijson.loads(b'{"HostConfig": {"Privileged": false, "privileged": true}}')
    with pytest.raises(apijson.BadBody):
        apijson.loads(b'{"OomScoreAdj": NaN}')
    with pytest.raises(apijson.BadBody, match="over"):
        apijson.loads(b" " * (apijson.MAX_BODY + 1))


def test_exec_volume_network_and_build_rows():
    assert policy.check("POST", "/containers/web/exec", apijson.loads(b'{"Privileged": true}'), CTX).what == \
        "docker exec --privileged"
    assert policy.check("POST", "/containers/web/exec", apijson.loads(b'{"Cmd": ["sh"]}'), CTX) is None
    vol = apijson.loads(b'{"Name": "v", "DriverOpts": {"type": "none", "device": "/", "o": "bind"}}')
    assert "driver options" in policy.check("POST", "/volumes/create", vol, CTX).what
    assert "driver other than local" in policy.check(
        "POST", "/volumes/create", apijson.loads(b'{"Driver": "sshfs"}'), CTX).what
    assert policy.check("POST", "/volumes/create", apijson.loads(b'{"Name": "v"}'), CTX) is None
    for body, words in ((b'{"Driver": "macvlan"}', "driver other than bridge"),
                        (b'{"Options": {"com.docker.network.bridge.name": "bth1002"}}', "driver options"),
                        (b'{"IPAM": {"Config": [{"Subnet": "10.213.4.0/25"}]}}', "outside your own networks"),
                        (b'{"IPAM": {"Config": [{"Subnet": "172.30.99.0/24"}]}}', "outside your own networks"),
                        (b'{"IPAM": {"Driver": "weird"}}', "IPAM driver"),
                        (b'{"Name": "n", "EnableIPv6": true}', "IPv6 network (--ipv6)")):
        assert words in policy.check("POST", "/networks/create", apijson.loads(body), CTX).what, body
    inside = apijson.loads(b'{"Name": "n", "IPAM": {"Config": [{"Subnet": "10.213.3.192/28"}]}}')
    assert policy.check("POST", "/networks/create", inside, CTX) is None
    assert policy.check("POST", "/networks/create", apijson.loads(b'{"Name": "n"}'), CTX) is None
    assert policy.check("POST", "/networks/create", apijson.loads(b'{"Name": "n", "EnableIPv6": false}'), CTX) is None
    assert "--network=host" in policy.check("POST", "/build?t=x&networkmode=host", None, CTX).what
    assert policy.check("POST", "/build?t=x&networkmode=default", None, CTX) is None


@pytest.mark.parametrize("target", ["/v1.41/plugins/pull?remote=x", "/swarm/init", "/services/create",
                                    "/nodes", "/secrets/create", "/configs", "/tasks"])
def test_plugin_and_swarm_endpoints_are_refused(target):
    assert policy.check("POST", target, None, CTX) is not None


@pytest.mark.parametrize("target", ["/v1.41//containers/create", "/containers/../containers/create",
                                    "/containers/./create", "/containers/%2E%2E/create", "/containers/x%zz/json",
                                    "containers/create",
                                    # versions dockerd's router takes, written another way, or too old:
                                    # below 1.24 a start body carries a HostConfig nothing here reads
                                    "/v1.41.0/containers/create", "/v1.41./plugins/pull", "/v/containers/create",
                                    "/v1.23/containers/x/start", "/v1.12/containers/create"])
def test_paths_written_another_way_are_refused(target):
    assert isinstance(policy.canonical(target), policy.Refusal)


def test_paths_are_decoded_once_as_dockerd_decodes_them():
    # docker-py and docker-java percent-encode image names
    assert policy.canonical("/v1.41/images/testcontainers%2Fryuk:0.5/json")[0] == "/images/testcontainers/ryuk:0.5/json"
    assert policy.check("GET", "/v1.41/images/busybox%40sha256%3Aabc/json", None, CTX) is None
    assert policy.canonical("/containers%2Fcreate")[0] == "/containers/create"  # and so checked as one
    assert policy.canonical("/images/a%252Fb/json")[0] == "/images/a%2Fb/json"  # once, not twice
    # an encoded "/" in a container's segment is no route of berth's
    assert policy.check("GET", "/containers/a%2Fb/json", None, CTX) is not None
    assert policy.reads_body("POST", policy.canonical("/v1.41/containers%2Fcreate")[0])


def test_canonical_paths():
    assert policy.canonical("/v1.41/containers/create?name=web") == ("/containers/create", {"name": ["web"]})
    assert policy.canonical("/containers/json")[0] == "/containers/json"


def test_binds_become_mounts_that_never_create_their_source():
    hc = apijson.loads(b'{"Binds": ["/home/a/data:/data:ro,rslave", "cache:/cache:nocopy"], '
                       b'"mounts": [{"Type": "tmpfs", "Target": "/t"}], "Memory": 1}')
    out = policy.binds_to_mounts(hc)
    assert "mounts" not in out and out["Memory"] == 1
    assert out["Mounts"] == [
        {"Type": "tmpfs", "Target": "/t"},
        {"Type": "bind", "Source": "/home/a/data", "Target": "/data", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave"}}]
    # a named volume (compose's `data:/data`) stays as sent: inspect shows it so, as on dockerd
    assert out["Binds"] == ["cache:/cache:nocopy"]
    assert "Binds" not in policy.binds_to_mounts(apijson.loads(b'{"Binds": ["/a:/b"]}'))
    assert policy.binds_to_mounts(apijson.loads(b'{"Binds": null}')) == {}


def test_a_bind_of_a_destination_alone_is_an_anonymous_volume():
    """compose 1.29 sends `-v /data` as a one-part Bind: dockerd makes it an anonymous volume."""
    out = policy.binds_to_mounts(apijson.loads(b'{"Binds": ["/data", "/h:/c"]}'))
    assert out["Binds"] == ["/data"] and [m["Target"] for m in out["Mounts"]] == ["/c"]


def test_host_config_fields_at_the_top_of_a_create_body_are_refused():
    """dockerd 20.10 takes them from there when HostConfig is absent."""
    body = apijson.loads(b'{"Image": "x", "UsernsMode": "host", "Privileged": true, "Binds": ["/:/host"]}')
    refusal = policy.check("POST", "/containers/create", body, CTX)
    assert refusal is not None and "outside HostConfig" in refusal.what
    # merged from the top even when HostConfig is there
    merged = apijson.loads(b'{"Image": "x", "HostConfig": {}, "VolumeDriver": "evil", "memory": 1}')
    assert "outside HostConfig" in policy.check("POST", "/containers/create", merged, CTX).what
    ok = apijson.loads(b'{"image": "x", "Cmd": ["true"], "Labels": {}, "HostConfig": {}, "NetworkingConfig": {}}')
    assert policy.check("POST", "/containers/create", ok, CTX) is None


def test_top_level_keys_dockerd_ignores_are_dropped_not_refused():
    # docker-java's PortSpecs, dockerode's name and platform, a null HostConfig field
    body = apijson.loads(b'{"Image": "x", "PortSpecs": null, "name": "web", "platform": "linux", "Memory": null, '
                         b'"HostConfig": {"Binds": []}}')
    assert policy.check("POST", "/containers/create", body, CTX) is None
    out = policy.create_body_for_dockerd(body)
    assert list(out) == ["Image", "HostConfig"] and out.field("hostconfig") == {"Binds": []}
    plain = apijson.loads(b'{"Image": "x"}')
    assert policy.create_body_for_dockerd(plain) is plain


def test_an_exec_through_a_link_alias_is_refused_and_exec_bodies_are_read():
    body = apijson.loads(b'{"Privileged": true, "Cmd": ["sh"]}')
    assert policy.check("POST", "/containers/p/al/exec", body, CTX) is not None
    assert policy.reads_body("POST", "/containers/web/exec")
    assert not policy.reads_body("POST", "/containers/web/start")


@pytest.mark.parametrize("target, words", [
    ("/build?cgroupparent=/", "--cgroup-parent"),
    ("/build?ulimits=%5B%7B%22Name%22%3A%22rtprio%22%7D%5D", "--ulimit"),
    ("/build?securityopt=seccomp%3Dunconfined", "--security-opt"),
    ("/build?remote=https%3A%2F%2F10.213.4.2%2Fctx.tar", "fetch it yourself"),
    ("/build?version=2&remote=git%40github.com%3Ax%2Fy.git", "fetch it yourself"),
    ("/build?version=2&remote=client-session&remote=https%3A%2F%2Fx%2Fy", "fetch it yourself"),
    ("/build?version=2&remote=client-session&networkmode=host", "--network=host"),
    ("/images/create?fromSrc=http%3A%2F%2F10.213.4.2%3A8080%2F&repo=x", "fetch it yourself"),
])
def test_build_options_and_fetches_by_root_are_refused(target, words):
    refusal = policy.check("POST", target, None, CTX)
    assert refusal is not None and words in refusal.what + refusal.instead
    assert policy.check("POST", "/build?t=x&rm=1&networkmode=default", None, CTX) is None
    assert policy.check("POST", "/images/create?fromSrc=-&repo=x", None, CTX) is None  # docker import FILE
    assert policy.check("POST", "/images/create?fromImage=busybox&tag=1", None, CTX) is None  # docker pull


def test_buildkit_sessions_and_grpc_are_dockerds_to_answer():
    # docker CLI 20.10 with DOCKER_BUILDKIT=1, as recorded: a session, then the build it serves
    assert policy.check("POST", "/session", None, CTX) is None
    assert policy.check("POST", "/v1.41/session", None, CTX) is None
    target = ("/v1.41/build?buildargs=%7B%7D&buildid=5e1f&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&"
              "cpusetcpus=&cpusetmems=&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0&memswap=0&"
              "networkmode=default&remote=client-session&rm=1&session=q2k4&shmsize=0&t=x&target=&ulimits=null&"
              "version=2")
    assert policy.check("POST", target, None, CTX) is None
    # `docker build - < ctx.tar`: the context in a request of its own, the build naming it
    assert policy.check("POST", "/v1.41/build?buildid=upload-request%3A5e1f&version=2", None, CTX) is None
    assert policy.check("POST", "/v1.41/build?buildid=5e1f&remote=upload-request&version=2", None, CTX) is None
    assert policy.check("POST", "/grpc", None, CTX) is None  # dockerd's version is the proxy's to ask (below)
    assert policy.check("GET", "/session", None, CTX) is not None


@pytest.mark.parametrize("api_version, driver, refused", [
    ("1.41", "cgroupfs", None),  # dockerd 20.10: BuildKit 0.8, its steps below the daemon's cgroup-parent
    ("1.40", "cgroupfs", None),
    ("1.42", "cgroupfs", "cgroup of its own choosing"),  # Docker 23: BuildKit 0.10 takes one from the build
    ("1.47", "cgroupfs", "cgroup of its own choosing"),
    ("2.0", "cgroupfs", "cgroup of its own choosing"),
    (None, "cgroupfs", "cgroup of its own choosing"),  # a dockerd that does not say
    ("", "cgroupfs", "cgroup of its own choosing"),
    ("1.41.1", "cgroupfs", "cgroup of its own choosing"),
    ("1.41", "systemd", "outside your share"),  # steps beside dockerd's own cgroup (moby#45796)
    ("1.41", None, "outside your share"),
])
def test_buildkit_passes_only_where_its_steps_stay_in_the_users_share(api_version, driver, refused):
    refusal = policy.buildkit_refusal(api_version, driver)
    assert (refusal is None) == (refused is None)
    if refused:
        assert refused in refusal.what and "DOCKER_BUILDKIT=0" in refusal.instead


@pytest.mark.parametrize("method, target, drives", [
    ("POST", "/grpc", True),
    ("POST", "/v1.41/build?version=2&remote=client-session", True),
    ("POST", "/build?version=2&version=1", True),  # dockerd reads the first
    ("POST", "/build?version=1&version=2", False),
    ("POST", "/build?version=1", False),
    ("POST", "/build", False),
    ("POST", "/session", False),  # a session alone builds nothing
    ("POST", "/build/prune", False),
])
def test_what_drives_buildkit_is_what_waits_for_dockerds_version(method, target, drives):
    assert policy.asks_buildkit(method, *policy.canonical(target)) == drives


def test_empty_build_parameters_are_absent_as_every_legacy_client_sends_them():
    # docker CLI 20.10 (Debian's /usr/bin/docker) on every legacy build, as recorded
    target = ("/v1.41/build?buildargs=%7B%7D&cachefrom=%5B%5D&cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus=&"
              "cpusetmems=&cpushares=0&dockerfile=Dockerfile&labels=%7B%7D&memory=0&memswap=0&networkmode=default&"
              "q=1&rm=1&shmsize=0&target=&ulimits=null&version=1")
    assert policy.check("POST", target, None, CTX) is None
    nofile = "/build?ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22Hard%22%3A1024%2C%22Soft%22%3A1024%7D%5D"
    assert policy.check("POST", nofile, None, CTX) is None
    for bad in ("/build?ulimits=%5B%7B%22Name%22%3A%22RTPRIO%22%7D%5D", "/build?ulimits=nonsense",
                "/build?ulimits=%5B1%5D", "/build?cgroupparent=%20x", "/build?isolation=hyperv",
                "/build?cgroupparent=null", "/build?cgroupparent=%7B%7D", "/build?securityopt=%5B%5D",
                # a key twice: Python's reading would take the first, Go's the last
                "/build?ulimits=%5B%7B%22Name%22%3A%22nofile%22%2C%22name%22%3A%22rtprio%22%7D%5D"):
        assert policy.check("POST", bad, None, CTX) is not None, bad


def test_a_body_that_would_hold_the_shared_loop_is_refused_cheaply():
    with pytest.raises(apijson.BadBody, match="nested"):
        apijson.loads(b"[" + b"{}," * 20000 + b"{}]")
    with pytest.raises(apijson.BadBody, match="nested"):
        apijson.loads(b"[" * 100 + b"]" * 100)


def test_docker_update_and_network_connect_bodies_are_checked():
    update = apijson.loads(b'{"Devices": [{"PathOnHost": "/dev/sda"}], "Memory": 1}')
    assert policy.reads_body("POST", "/containers/web/update")
    assert "devices other than GPUs" in policy.check("POST", "/containers/web/update", update, CTX).what
    assert policy.check("POST", "/containers/web/update", apijson.loads(b'{"Memory": 1073741824}'), CTX) is None
    connect = apijson.loads(b'{"Container": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.213.4.9"}}}')
    assert policy.reads_body("POST", "/networks/mine/connect")
    assert "outside your own networks" in policy.check("POST", "/networks/mine/connect", connect, CTX).what
    assert policy.check("POST", "/networks/mine/connect", apijson.loads(b'{"Container": "web"}'), CTX) is None


@pytest.mark.parametrize("method, target", [
    ("HEAD", "/_ping"), ("GET", "/v1.41/containers/json?all=1"), ("POST", "/containers/web/wait?condition=next-exit"),
    ("GET", "/images/registry.example/team/img:1/json"), ("POST", "/images/create?fromSrc=-&repo=bb"),
    ("GET", "/images/get?names=bb"), ("DELETE", "/images/sha256:abc"), ("POST", "/exec/0123abc/start"),
    ("GET", "/networks/"), ("DELETE", "/volumes/data"), ("POST", "/build/prune"), ("PUT", "/containers/web/archive"),
    ("GET", "/distribution/busybox:1/json"), ("POST", "/commit?container=web&repo=snap"),
    ("OPTIONS", "/containers/json"), ("OPTIONS", "/_ping"),  # dockerd's CORS preflight: 200, nothing done
])
def test_routes_the_docker_cli_uses_pass(method, target):
    assert policy.check(method, target, None, CTX) is None


@pytest.mark.parametrize("method, target", [
    ("POST", "/containers/web/checkpoints"), ("GET", "/containers/web/attach"), ("PUT", "/containers/create"),
    ("POST", "/debug/pprof"), ("GET", "/containers/p/alias/json"),
    ("POST", "/images/x/squash"), ("GET", "/no/such/route"),
])
def test_every_other_route_is_refused(method, target):
    refusal = policy.check(method, target, None, CTX)
    assert refusal is not None and "the Docker API the docker CLI uses" in refusal.instead


def test_a_users_networks_get_bridges_named_after_their_own():
    body = apijson.loads(b'{"Name": "web", "Driver": "bridge"}')
    named = policy.name_bridge(body, "bth1001", "0123456789abcdef")
    assert named["Options"] == {"com.docker.network.bridge.name": "bth1001.0123456"}  # 15 characters at most
    assert named["Name"] == "web"
    assert policy.name_bridge(apijson.loads(b'{"Name": "x"}'), "bth1001", "ab12cd34")["Options"] == {
        "com.docker.network.bridge.name": "bth1001.ab12cd3"}
    # no room left for a suffix of its own, or not a bridge: left to dockerd
    assert policy.name_bridge(body, "abcde1234567890", "ab12") is body
    assert "Options" not in policy.name_bridge(apijson.loads(b'{"Name": "m", "Driver": "macvlan"}'), "bth1001", "ab")


def test_plugins_may_be_read_never_installed_or_enabled():
    assert policy.check("GET", "/v1.41/plugins/no%20such%20name/json", None, CTX) is None  # docker inspect NAME
    assert policy.check("GET", "/plugins", None, CTX) is None
    for method, target in (("GET", "/plugins/privileges?remote=x"), ("POST", "/plugins/x/enable"),
                           ("POST", "/plugins/pull?remote=x"), ("DELETE", "/plugins/x"), ("GET", "/plugins/x/y/json")):
        assert policy.check(method, target, None, CTX) is not None, (method, target)


@pytest.mark.parametrize("query, version", [
    ("version=1;x&version=2", ["2"]), ("version=%zz&version=2", ["2"]), ("version=%&version=2", ["2"]),
    ("version=2", ["2"]), ("version=1&version=2", ["1", "2"]),
])
def test_a_query_is_read_as_go_reads_it(query, version):
    """Go drops a pair with ";" or a bad escape: the first `version` dockerd reads is berth's first too
    (the red team built with BuildKit past the gate with `version=1;x&version=2`)."""
    assert policy.go_query(query)["version"] == version
    assert policy.asks_buildkit("POST", "/build", policy.go_query(query)) is (version[0] == "2")


def test_go_query_decodes_once_with_plus_as_space():
    assert policy.go_query("path=%2Fh+x&flag&empty=") == {"path": ["/h x"], "flag": [""], "empty": [""]}
    assert policy.go_query("a=%252F") == {"a": ["%2F"]}
