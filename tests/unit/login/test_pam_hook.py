import io
import subprocess
import sys

import pytest

from berth.lifecycle import logindigest
from berth.login import hook as pam


@pytest.fixture(autouse=True)
def _private_login_digests(tmp_path_factory, monkeypatch):
    """CI runs these as root: the digests the hook leaves of the configs it
    reads go to a temp dir, not the host's /run/berth-login."""
    monkeypatch.setattr(logindigest, "DIR", str(tmp_path_factory.mktemp("berth-login")))


def run(environ, config_path=None):
    out = io.StringIO()
    code = pam.main(environ=environ, out=out, config_path=config_path)
    return code, out.getvalue()


def test_not_a_session_event_does_nothing():
    assert run({"PAM_USER": "alice"}) == (0, "")
    assert run({"PAM_USER": "alice", "PAM_TYPE": "auth"}) == (0, "")


def test_users_berth_does_not_serve_are_left_alone(tmp_path):
    cfg = tmp_path / "berth.toml"
    cfg.write_text(f'[paths]\nrun_dir = "{tmp_path}/run"\n')
    for user in ("root", "daemon", "no_such_user_here", "../etc"):
        assert run({"PAM_USER": user, "PAM_TYPE": "open_session"}, str(cfg)) == (0, "")
    assert not (tmp_path / "run").exists()


def test_broken_config_prints_one_line_and_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(pam.users, "lookup", lambda name: pam.users.Account(name, 5000, 5000, "/home/alice"))
    cfg = tmp_path / "berth.toml"
    cfg.write_text("[network\n")
    code, out = run({"PAM_USER": "alice", "PAM_TYPE": "open_session"}, str(cfg))
    assert code == 0
    assert len(out.splitlines()) == 1
    assert out.startswith("berth: your Docker daemon could not be started") and "tell" in out
    # closing a session never talks
    assert run({"PAM_USER": "alice", "PAM_TYPE": "close_session"}, str(cfg)) == (0, "")


def test_entry_point_routes_pam_without_the_cli(tmp_path):
    """`berth pam` must not load argparse: it runs at every login."""
    code = ("import sys; sys.argv = ['berth', 'pam']; from berth.entry import main; main(); "
            "print('argparse' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "PAM_TYPE": "open_session", "PAM_USER": "root"})
    assert r.stdout.strip() == "False", r.stderr


def test_hook_options():
    from berth.entry import hook_options
    assert hook_options(["pam"]) == {}
    assert hook_options(["pam", "--run-dir", "/run/berth"]) == {"run_dir": "/run/berth"}
    assert hook_options(["pam", "--run-dir", "/r", "--config", "/c"]) == {"run_dir": "/r", "config_path": "/c"}
    assert hook_options(["pam", "--run-dir"]) is None
    assert hook_options(["pam", "--bogus", "x"]) is None
    assert hook_options(["up", "alice"]) is None


def test_items_are_the_last_of_each_and_repeats_are_reported():
    block = (b"LANG=C\0PAM_USER=victim\0LD_PRELOAD=/home/eve/x.so\0PAM_SERVICE=sshd\0"
             b"PAM_USER=eve\0PAM_TYPE=open_session\0junk\0")
    items, suspicious = pam.items_from(block)
    assert items == {"PAM_USER": "eve", "PAM_SERVICE": "sshd", "PAM_TYPE": "open_session"}
    assert suspicious == ["PAM_USER"]
    assert pam.items_from(b"PAM_USER=alice\0PAM_TYPE=open_session\0") == (
        {"PAM_USER": "alice", "PAM_TYPE": "open_session"}, [])


def test_scrub_leaves_only_a_fixed_path():
    env = {"PATH": "/home/eve/bin", "BERTH_CONFIG": "/home/eve/b.toml", "PYTHONPATH": "/home/eve"}
    pam.scrub(env)
    assert env == {"PATH": pam.SYSTEM_PATH, "LANG": "C.UTF-8"}


def test_the_hook_reads_its_items_from_its_own_environment_block(tmp_path):
    """Run as pam_exec runs it: BERTH_CONFIG, PATH and PYTHON* in the
    environment change nothing; the config is never read from BERTH_CONFIG."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\n")  # were it read, the hook would print a failure
    code = ("import os, sys; sys.argv = ['berth', 'pam']; from berth.entry import main; main(); "
            "print(sorted(os.environ))")
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       env={"PATH": str(tmp_path), "PAM_TYPE": "open_session", "PAM_USER": "root",
                            "BERTH_CONFIG": str(bad), "PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == ["['LANG', 'PATH']"]


def test_close_session_does_nothing():
    assert run({"PAM_USER": "root", "PAM_TYPE": "close_session"}) == (0, "")
