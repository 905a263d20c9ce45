import io
import subprocess
import sys

from berth import pam


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


def test_broken_config_prints_one_line_and_succeeds(tmp_path):
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
