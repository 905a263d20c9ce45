"""berth doctor on a healthy install, then with one fault at a time."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import STOCK_SSHD_PAM

from berth.net import bridge
from berth.net.leases import LeaseTable


@pytest.fixture(scope="module")
def sysroot(harness):
    """An install (`berth install`) into a directory of the test's own."""
    root = os.path.join(harness.root, "sysroot")
    os.makedirs(os.path.join(root, "etc/pam.d"))
    shutil.copy(STOCK_SSHD_PAM, os.path.join(root, "etc/pam.d/sshd"))
    harness.berth("install", "--root", root, "--python", sys.executable)
    return root


def doctor(harness, sysroot, config=None):
    r = harness.berth("doctor", "--root", sysroot, "--json", config=config, check=False)
    return r.returncode, json.loads(r.stdout)["checks"]


def problems(checks):
    """Non-ok checks, but for hardened mode's standing warning that its policy
    proxy is not in place yet (test_hardened_mode_says_what_is_missing)."""
    return [c for c in checks if c["level"] != "ok" and c["name"] != "policy proxy"]


def test_healthy_install_is_all_ok(harness, sysroot):
    code, checks = doctor(harness, sysroot)
    assert problems(checks) == [] and code == 0
    names = {c["name"] for c in checks}
    for expected in ("dockerd", "containerd", "runc", "pause image", "kernel: bridge", "kernel: overlayfs",
                     "kernel: netfilter NAT", "iptables backend", "address pool", "PAM lines", "pam_env conf",
                     "profile.d script", "reaper schedule", "ownership", "leases"):
        assert expected in names
    text = harness.berth("doctor", "--root", sysroot).stdout
    assert all(line.startswith("ok ") for line in text.splitlines()), text


def test_hardened_mode_checks_its_parts_and_trusted_mode_says_what_it_means(harness, sysroot):
    _, checks = doctor(harness, sysroot)
    (proxy,) = [c for c in checks if c["name"] == "policy proxy"]
    assert proxy["level"] == "ok"  # no hardened daemon runs here: none needed yet
    assert {c["name"] for c in checks} >= {"user namespaces", "subordinate ids"}
    trusted = harness.write_config("doctor-trusted.toml", extra='[security]\nmode = "trusted"\n')
    _, checks = doctor(harness, sysroot, trusted)
    (mode,) = [c for c in checks if c["name"] == "security mode"]
    assert mode["level"] == "warn" and "root-equivalent" in mode["detail"]


def test_missing_dockerd(harness, sysroot):
    cfg = harness.write_config("doctor-nodockerd.toml", dockerd="dockerd-not-installed")
    code, checks = doctor(harness, sysroot, cfg)
    (bad,) = problems(checks)
    assert code == 1 and bad["level"] == "FAIL" and "dockerd-not-installed not found" in bad["detail"]
    assert "apt-get install docker.io" in bad["fix"]


def test_pool_overlapping_a_host_network(harness, sysroot):
    name = f"{harness.bridge_prefix}x"
    net = list(harness.pool.subnets(new_prefix=24))[-1]
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", f"{net[1]}/24", "dev", name], check=True)
        code, checks = doctor(harness, sysroot)
        (bad,) = problems(checks)
        assert code == 1 and bad["name"] == "address pool" and f"overlaps {net} on {name}" in bad["detail"]
        assert "[network].pool" in bad["fix"]
    finally:
        bridge.remove_bridge(name)


def test_lease_of_a_deleted_user(harness, sysroot):
    cfg = harness.cfg()
    table = LeaseTable(str(cfg.paths.state_dir))
    table.acquire("btghostuser", 4242, cfg.network.pool, 24, lambda: [])
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = problems(checks)
        assert bad["level"] == "warn" and "btghostuser" in bad["detail"] and "no longer exists" in bad["detail"]
        assert bad["fix"] == "berth down --purge --yes btghostuser"
    finally:
        table.release("btghostuser")


def test_leftover_bridge(harness, sysroot):
    name = f"{harness.bridge_prefix}99997"
    bridge.ensure_bridge(name, "192.0.2.5/30", "someone")
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = problems(checks)
        assert bad["name"] == "orphan bridge" and name in bad["detail"] and bad["fix"] == "berth reap"
    finally:
        bridge.remove_bridge(name)


def test_user_writable_runtime_dir(harness, sysroot):
    d = os.path.join(harness.root, "run", "btsomeone")
    os.makedirs(os.path.dirname(d), mode=0o711, exist_ok=True)  # as berth makes it
    os.makedirs(d)
    os.chmod(d, 0o777)
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = [c for c in problems(checks) if c["name"] == "ownership"]
        assert code == 1 and bad["level"] == "FAIL" and d in bad["detail"]
        assert f"chmod go-w {d}" in bad["fix"]
    finally:
        os.rmdir(d)


def test_missing_login_hook(harness, sysroot):
    env_conf = os.path.join(sysroot, "etc/berth/pam_env.conf")
    saved = open(env_conf).read()
    os.unlink(env_conf)
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = problems(checks)
        assert code == 0 and bad["level"] == "warn" and bad["fix"] == "berth install"
    finally:
        with open(env_conf, "w") as f:
            f.write(saved)


def test_invalid_config_is_a_check_and_the_others_still_run(harness, sysroot):
    cfg = os.path.join(harness.root, "doctor-bad.toml")
    with open(cfg, "w") as f:
        f.write("[network]\npool = 'not-a-network'\n")
    r = harness.berth("doctor", "--root", sysroot, "--json", config=cfg, check=False)
    checks = json.loads(r.stdout)["checks"]
    (bad,) = [c for c in checks if c["name"] == "config"]
    assert r.returncode == 1 and bad["level"] == "FAIL" and "[network].pool" in bad["detail"]
    assert {c["name"] for c in checks} >= {"dockerd", "kernel: overlayfs", "iptables backend"}


def test_a_pam_env_reading_users_files_above_berths_hook_fails(harness, sysroot):
    """An admin's hand edit: the stock line moved above berth's block."""
    path = os.path.join(sysroot, "etc/pam.d/sshd")
    good = open(path).read()
    reader = "session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale\n"
    with open(path, "w") as f:
        f.write(good.replace(reader, "").replace("# BEGIN berth", reader + "# BEGIN berth", 1))
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = problems(checks)
        assert code == 1 and bad["level"] == "FAIL" and bad["name"] == "PAM layout"
        assert "reads users' ~/.pam_environment before berth's hook" in bad["detail"]
        assert "move berth's block above that line" in bad["fix"]
    finally:
        with open(path, "w") as f:
            f.write(good)


def test_privacy_of_berths_files(harness, sysroot):
    leases = os.path.join(harness.root, "state", "leases.json")
    LeaseTable(str(harness.cfg().paths.state_dir)).acquire("btprivacy", 4243, harness.pool, 24, lambda: [])
    os.chmod(leases, 0o644)  # as an older berth left it
    try:
        code, checks = doctor(harness, sysroot)
        (bad,) = [c for c in problems(checks) if c["name"] == "privacy"]
        assert code == 1 and bad["level"] == "FAIL" and leases in bad["detail"]
        assert bad["fix"].startswith(f"chmod 600 {leases}")
    finally:
        LeaseTable(str(harness.cfg().paths.state_dir)).release("btprivacy")
        os.chmod(leases, 0o600)


def test_set_up_twice_is_set_up_once(harness, sysroot):
    """The set-up's core (berth install) run again changes nothing and doctor stays healthy."""
    before = {p: open(os.path.join(sysroot, p)).read() for p in ("etc/pam.d/sshd", "etc/berth/pam_env.conf")}
    r = harness.berth("install", "--root", sysroot, "--python", sys.executable)
    assert "nothing to do: berth is already installed" in r.stdout
    assert {p: open(os.path.join(sysroot, p)).read() for p in before} == before
    code, checks = doctor(harness, sysroot)
    assert problems(checks) == [] and code == 0
