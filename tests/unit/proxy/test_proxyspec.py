from types import MappingProxyType

import pytest

from berth.core import config, users
from berth.net import blocks
from berth.proxy import control as proxyctl
from berth.proxy import spec as proxyspec


def test_a_spec_round_trips_and_gives_the_policy_its_context():
    cfg = config.Config(daemon_json=MappingProxyType({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}))
    spec = proxyspec.for_user(cfg, users.Account("alice", 1001, 1001, "/home/alice"), blocks.layout("10.213.7.0/24"))
    assert spec == proxyspec.Spec("alice", 1001, "10.213.7.128/25", ("runc", "nvidia"), "bth1001",
                                  "/var/lib/berth/users/alice/pins")
    assert proxyspec.parse(proxyspec.render(spec)) == spec
    ctx = proxyspec.context(spec)
    assert ctx.user_networks == "10.213.7.128/25" and ctx.runtimes == ("runc", "nvidia") and ctx.bridge == "bth1001"
    # a spec an older berth wrote (no bridge) still reads
    old = proxyspec.parse("user=alice\nuid=1001\nnetworks=10.213.7.128/25\nruntimes=runc\n")
    assert old.bridge == "" and old.pins == ""  # and no pins: binds as that berth passed them


@pytest.mark.parametrize("text", ["", "user=alice\n", "user=alice\nuid=x\nnetworks=a\nruntimes=runc\n"])
def test_an_unreadable_spec_is_refused(text):
    with pytest.raises(proxyspec.BadSpec):
        proxyspec.parse(text)


def test_the_proxy_runs_isolated_with_its_run_dir_only():
    assert proxyctl.argv("/run/berth", "/opt/berth/bin/python") == [
        "/opt/berth/bin/python", "-I", "-m", "berth", "proxy", "--run-dir", "/run/berth"]
    assert proxyctl.control_path("/run/berth") == "/run/berth/berth-proxy/ctl.sock"


@pytest.mark.parametrize("slurm, gpus", [({}, "all"), ({"enabled": True}, "none"),
                                         ({"enabled": True, "login_gpus": "all"}, "all"),
                                         ({"enabled": False, "login_gpus": "none"}, "all")])
def test_the_login_socket_holds_gpus_back_on_a_slurm_node_unless_the_admin_says_otherwise(slurm, gpus):
    cfg = config.Config(slurm=config.SlurmConfig(**slurm))
    spec = proxyspec.for_user(cfg, users.Account("alice", 1001, 1001, "/home/alice"), blocks.layout("10.213.7.0/24"))
    assert spec.gpus == gpus and proxyspec.parse(proxyspec.render(spec)) == spec


def test_a_spec_with_an_unknown_gpu_setting_is_refused():
    with pytest.raises(proxyspec.BadSpec):
        proxyspec.parse("user=alice\nuid=1001\nnetworks=10.213.7.128/25\nruntimes=runc\ngpus=some\n")
