import os
import shutil
import subprocess

import pytest

from berth.core import config, paths
from berth.daemon import supervisor as supervisor_mod


def upaths():
    return paths.for_user(config.Config(), "alice")


def test_systemd_run_argv():
    argv = supervisor_mod.systemd_run_argv(upaths(), "/usr/sbin/dockerd", 30)
    assert argv[:2] == ["systemd-run", "--unit=berth-dockerd-alice.service"]
    assert "--no-block" in argv and "--collect" in argv
    props = [argv[i + 1] for i, a in enumerate(argv) if a == "--property"]
    assert "Type=notify" in props and "Delegate=yes" in props and "KillMode=mixed" in props
    assert "TimeoutStopSec=30s" in props
    assert "StandardOutput=append:/var/log/berth/alice.log" in props
    assert argv[argv.index("--") + 1:] == ["/usr/sbin/dockerd", "--config-file", "/run/berth/alice/daemon.json"]


def test_a_hardened_unit_loads_the_device_filter_before_dockerd():
    import sys

    from berth.daemon import nodevices
    argv = supervisor_mod.systemd_run_argv(upaths(), "/usr/sbin/dockerd", 30, hardened=True)
    assert argv[argv.index("--") + 1:] == [sys.executable, "-I", "-S", nodevices.__file__, "/usr/sbin/dockerd",
                                          "--config-file", "/run/berth/alice/daemon.json"]
    if os.geteuid() != 0:
        return  # loading a filter without no_new_privs is root's
    entered = supervisor_mod.systemd_run_argv(upaths(), "/usr/sbin/dockerd", 30, hardened=True,
                                              mount_ns="/run/berth/berth-mnt/ns")
    assert entered[entered.index("--") + 1:][1:4] == ["--mount=/run/berth/berth-mnt/ns", "--", sys.executable]
    r = subprocess.run([sys.executable, "-I", "-S", nodevices.__file__, "/bin/sh", "-c",
                        "grep ^Seccomp: /proc/self/status"], capture_output=True, text=True)
    assert r.stdout.split() == ["Seccomp:", "2"], r.stderr


def test_supervisor_choice(tmp_path):
    up = upaths()
    assert isinstance(supervisor_mod.for_host(up, "d", 1, "systemd"), supervisor_mod.SystemdSupervisor)
    assert type(supervisor_mod.for_host(up, "d", 1, "direct")) is supervisor_mod.DirectSupervisor
    assert supervisor_mod.systemd_booted(str(tmp_path)) is True
    assert supervisor_mod.systemd_booted(str(tmp_path / "nope")) is False


def test_supervisor_config_is_validated():
    with pytest.raises(config.ConfigError, match="one of"):
        config.parse({"daemon": {"supervisor": "upstart"}})


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    dockerd = shutil.which("dockerd", path="/usr/sbin:/usr/bin") or "/bin/true"
    unit = tmp_path / "berth-dockerd-alice.service"
    for hardened in (False, True):
        unit.write_text(supervisor_mod.unit_text(upaths(), dockerd, 30, hardened=hardened))
        r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        # Complaints about this box (no systemd running) are not about the unit.
        problems = [line for line in r.stderr.splitlines() if "berth-dockerd-alice" in line]
        assert problems == [], r.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_the_proxy_unit_passes_systemd_analyze_verify(tmp_path):
    from berth.proxy import control as proxyctl
    unit = tmp_path / "berth-proxy.service"
    unit.write_text(proxyctl.unit_text("/run/berth", "/var/log/berth/proxy.log", "/usr/bin/python3"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if "berth-proxy" in line]
    assert problems == [], r.stderr


def test_daemons_start_in_the_mount_namespace_they_are_given_wherever_berth_runs(tmp_path):
    from berth.daemon.hostns import in_mount_namespace
    mine, init = tmp_path / "self", tmp_path / "init"
    init.symlink_to("mnt:[4026531832]")
    mine.symlink_to("mnt:[4026531832]")
    assert in_mount_namespace(["dockerd", "-x"], str(init), str(mine)) == ["dockerd", "-x"]
    mine.unlink()
    mine.symlink_to("mnt:[4026532999]")  # a login through a service with a namespace of its own
    argv = in_mount_namespace(["dockerd", "-x"], str(init), str(mine))
    assert argv[0].endswith("nsenter") and argv[1:] == [f"--mount={init}", "--", "dockerd", "-x"]
    assert in_mount_namespace(["dockerd"], str(tmp_path / "unreadable"), str(mine)) == ["dockerd"]
