"""The shared containerd's pure parts: namespaces, its config, shims' namespaces."""

import tomllib

import pytest

from berth.core import config, users
from berth.daemon import containerd


@pytest.mark.parametrize("user, uid, expected", [
    ("alice", 1001, "berth.alice"),
    ("a_b-c", 1002, "berth.a_b-c"),
    # names containerd would refuse as a namespace: by uid instead
    ("_svc", 1003, "berth.uid.1003"),
    ("a__b", 1004, "berth.uid.1004"),
    ("x-", 1005, "berth.uid.1005"),
])
def test_namespaces_are_the_users_by_name_or_by_uid(user, uid, expected):
    assert users.is_valid_name(user)
    assert containerd.namespaces(user, uid) == (expected, expected + ".plugins")


def test_two_users_never_share_a_namespace():
    # alice-plugins once got alice's plugin namespace, and uid1003 the fallback of uid 1003
    accounts = [("alice", 1), ("alice-plugins", 2), ("bob", 3), ("_a", 1003), ("uid", 5), ("uid1003", 6), ("a__", 7)]
    every = [ns for name, uid in accounts for ns in containerd.namespaces(name, uid)]
    assert len(every) == len(set(every))


def test_the_config_is_containerd_s_own_and_leaves_out_what_dockerd_never_asks_for():
    doc = tomllib.loads(containerd.render_config("/var/lib/berth/containerd", "/run/berth/berth-containerd/state",
                                                 "/run/berth/berth-containerd/containerd.sock"))
    assert doc["version"] == 2
    assert doc["root"] == "/var/lib/berth/containerd"
    assert doc["grpc"]["address"] == "/run/berth/berth-containerd/containerd.sock"
    assert "io.containerd.grpc.v1.cri" in doc["disabled_plugins"]
    assert doc["debug"]["address"] == "" and doc["metrics"]["address"] == ""


def test_a_shims_namespace_is_read_from_its_command_line():
    args = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "berth.alice", "-id", "ab12", "-address", "/x.sock"]
    assert containerd.shim_namespace(args) == "berth.alice"
    assert containerd.shim_namespace(["/usr/bin/containerd", "--config", "c"]) is None


def test_the_sockets_place_follows_the_setting(tmp_path):
    shared = containerd.Shared(tmp_path / "run", tmp_path / "state", tmp_path / "log")
    assert shared.address() == str(tmp_path / "run" / "berth-containerd" / "containerd.sock")
    given = containerd.Shared(tmp_path / "run", tmp_path / "state", tmp_path / "log", "/run/other/c.sock")
    assert given.address() == "/run/other/c.sock" and given.external == "/run/other/c.sock"


@pytest.mark.parametrize("value, ok", [("shared", True), ("own", True), ("/run/containerd/containerd.sock", True),
                                       ("relative.sock", False), ("/a b", False), ("", False), (1, False)])
def test_the_setting_is_checked(value, ok):
    if ok:
        assert config.parse({"daemon": {"containerd": value}}).daemon.containerd == value
    else:
        with pytest.raises(config.ConfigError, match="containerd"):
            config.parse({"daemon": {"containerd": value}})


def test_the_unit_keeps_shims_running_when_containerd_stops():
    props = dict(containerd.unit_properties("/var/log/berth/containerd.log"))
    assert props["KillMode"] == "process" and props["Delegate"] == "yes"
