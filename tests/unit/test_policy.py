"""Each row of hardened mode's policy table, refused and allowed; the body
read as dockerd reads it; paths written one way only."""

import pytest

from berth import apijson, policy

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
    "HostConfig.VolumeDriver": ({"VolumeDriver": "nfs-plugin"}, {"VolumeDriver": "local"}, "volume driver"),
}


def test_every_row_of_the_create_table_has_a_case():
    assert {r.field for r in policy.CREATE} == set(CREATE_CASES)


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
                        (b'{"IPAM": {"Driver": "weird"}}', "IPAM driver")):
        assert words in policy.check("POST", "/networks/create", apijson.loads(body), CTX).what, body
    inside = apijson.loads(b'{"Name": "n", "IPAM": {"Config": [{"Subnet": "10.213.3.192/28"}]}}')
    assert policy.check("POST", "/networks/create", inside, CTX) is None
    assert policy.check("POST", "/networks/create", apijson.loads(b'{"Name": "n"}'), CTX) is None
    assert "--network=host" in policy.check("POST", "/build?t=x&networkmode=host", None, CTX).what
    assert policy.check("POST", "/build?t=x&networkmode=default", None, CTX) is None


@pytest.mark.parametrize("target", ["/v1.41/plugins/pull?remote=x", "/swarm/init", "/services/create",
                                    "/nodes", "/secrets/create", "/configs", "/tasks"])
def test_plugin_and_swarm_endpoints_are_refused(target):
    assert policy.check("POST", target, None, CTX) is not None


@pytest.mark.parametrize("target", ["/v1.41//containers/create", "/containers/../containers/create",
                                    "/containers/./create", "/containers%2Fcreate", "containers/create"])
def test_paths_written_another_way_are_refused(target):
    assert isinstance(policy.canonical(target), policy.Refusal)


def test_canonical_paths():
    assert policy.canonical("/v1.41/containers/create?name=web") == ("/containers/create", {"name": ["web"]})
    assert policy.canonical("/containers/json")[0] == "/containers/json"


def test_binds_become_mounts_that_never_create_their_source():
    hc = apijson.loads(b'{"Binds": ["/home/a/data:/data:ro,rslave", "cache:/cache:nocopy"], '
                       b'"mounts": [{"Type": "tmpfs", "Target": "/t"}], "Memory": 1}')
    out = policy.binds_to_mounts(hc)
    assert "Binds" not in out and "mounts" not in out and out["Memory"] == 1
    assert out["Mounts"] == [
        {"Type": "tmpfs", "Target": "/t"},
        {"Type": "bind", "Source": "/home/a/data", "Target": "/data", "ReadOnly": True,
         "BindOptions": {"Propagation": "rslave"}},
        {"Type": "volume", "Source": "cache", "Target": "/cache", "ReadOnly": False,
         "VolumeOptions": {"NoCopy": True}}]
