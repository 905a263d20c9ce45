from types import MappingProxyType

from berth.core import config, paths
from berth.daemon import daemonjson
from berth.net import blocks


def cfg_with(extra=None):
    return config.Config(daemon_json=MappingProxyType(extra or {}))


def render(extra=None):
    cfg = cfg_with(extra)
    up = paths.for_user(cfg, "alice")
    return daemonjson.render(cfg, up, blocks.layout("10.213.7.0/24"), "bth1001")


def test_owned_keys():
    doc = render()
    assert doc["data-root"] == "/var/lib/berth/users/alice/docker"
    assert doc["exec-root"] == "/run/berth/alice/x"
    # trusted mode (no remap): berth's own socket, and the user's served by dockerd itself
    assert doc["hosts"] == ["unix:///run/berth/alice/d/docker.sock", "unix:///run/berth/alice/docker.sock"]
    assert doc["pidfile"] == "/run/berth/alice/docker.pid"
    assert doc["bridge"] == "bth1001"
    assert doc["iptables"] is False
    assert doc["ip-masq"] is False
    assert doc["group"] == "root"
    assert doc["default-address-pools"] == [{"base": "10.213.7.128/25", "size": 28}]
    assert doc["fixed-cidr"] == "10.213.7.0/25"


def test_hardened_dockerd_listens_only_on_berths_own_socket():
    cfg = cfg_with()
    up = paths.for_user(cfg, "alice")
    doc = daemonjson.render(cfg, up, blocks.layout("10.213.7.0/24"), "bth1001", remap="berth-1001")
    # the user's socket is the policy proxy's: dockerd's own is root's alone
    assert doc["hosts"] == ["unix:///run/berth/alice/d/docker.sock"]
    assert doc["userns-remap"] == "berth-1001"


def test_every_rendered_key_is_one_berth_refuses_from_config():
    assert set(render()) <= config.OWNED_DAEMON_KEYS


def test_extras_are_merged():
    doc = render({"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}},
                  "registry-mirrors": ["https://mirror.internal"]})
    assert doc["default-runtime"] == "nvidia"
    assert doc["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert doc["registry-mirrors"] == ["https://mirror.internal"]
    assert doc["bridge"] == "bth1001"


def test_dumps_is_stable_json():
    import json
    text = daemonjson.dumps(render())
    assert json.loads(text) == render()
    assert text == daemonjson.dumps(render())


def test_exec_root_short_enough_for_containerd_sockets():
    cfg = config.Config()
    up = paths.for_user(cfg, "a" * 32)
    assert len(up.exec_root + "/containerd/containerd-debug.sock") <= paths.MAX_SOCKET_PATH


def test_a_shared_containerd_is_named_with_the_users_namespaces():
    cfg = cfg_with()
    up = paths.for_user(cfg, "alice")
    doc = daemonjson.render(cfg, up, blocks.layout("10.213.7.0/24"), "bth1001",
                            containerd=("/run/berth/berth-containerd/containerd.sock", "berth.alice",
                                        "berth.alice.plugins"))
    assert doc["containerd"] == "/run/berth/berth-containerd/containerd.sock"
    assert (doc["containerd-namespace"], doc["containerd-plugins-namespace"]) == ("berth.alice", "berth.alice.plugins")
    assert "containerd" not in render()  # own: dockerd starts its own, as before


def test_hardened_builders_grant_no_entitlement_and_keep_the_sites_gc():
    site = {"builder": {"gc": {"enabled": True, "defaultKeepStorage": "20GB"},
                        "entitlements": {"network-host": True}}}
    cfg = cfg_with(site)
    up = paths.for_user(cfg, "alice")
    doc = daemonjson.render(cfg, up, blocks.layout("10.213.7.0/24"), "bth1001", remap="berth-1001")
    # dockerd 20.10 grants network-host unless it is false (builder-next getEntitlements)
    assert doc["builder"] == {"gc": {"enabled": True, "defaultKeepStorage": "20GB"},
                              "Entitlements": {"network-host": False, "security-insecure": False}}
    assert render(site)["builder"] == site["builder"]  # trusted mode: the site's, as it wrote it
