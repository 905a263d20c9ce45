import io
import subprocess
import sys

import pytest

from berth import cli


def run(argv, monkeypatch, tmp_path, config_text="", run_dir=None):
    """cli.main with a config of the test's own: its state, run and log dirs
    in tmp_path (never the host's /var/log/berth), plus `config_text`."""
    p = tmp_path / "berth.toml"
    p.write_text(f"[paths]\nstate_dir = '{tmp_path}/s'\nrun_dir = '{run_dir or tmp_path / 'r'}'\n"
                 f"log_dir = '{tmp_path}/log'\n{config_text}")
    monkeypatch.setenv("BERTH_CONFIG", str(p))
    from berth.lifecycle import logindigest  # an `up` leaves the config's digest: in tmp_path, not /run/berth-login

    monkeypatch.setattr(logindigest, "DIR", str(tmp_path / "berth-login"))
    out = io.StringIO()
    return cli.main(argv, out=out), out.getvalue()


@pytest.mark.parametrize("user, words", [
    ("../etc", "not a valid user name"), ("a b", "not a valid user name"),
    ("root", "is root"), ("no_such_user_berth", "does not exist"), ("daemon", "below [users].min_uid"),
])
def test_bad_users_one_line_exit_1(user, words, monkeypatch, tmp_path, capsys):
    code, _ = run(["up", user], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert words in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "s").exists(), "bad input must create nothing"


def test_missing_dockerd_names_the_package(monkeypatch, tmp_path, capsys):
    from berth.core import users
    monkeypatch.setattr(users, "resolve", lambda name, *limits: users.Account(name, 4321, 100, "/home/x"))
    code, _ = run(["up", "alice"], monkeypatch, tmp_path, "[daemon]\ndockerd = '/nonexistent/dockerd'\n")
    err = capsys.readouterr().err
    assert code == 1 and "apt-get install docker.io" in err
    assert not (tmp_path / "s").exists()


def test_bad_config_one_line(monkeypatch, tmp_path, capsys):
    code, _ = run(["status"], monkeypatch, tmp_path, "[network]\npool = 'nope'\n")
    err = capsys.readouterr().err
    assert code == 1 and "[network].pool" in err and len(err.strip().splitlines()) == 1


def test_usage_error_exit_2():
    r = subprocess.run([sys.executable, "-m", "berth", "up"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "usage" in r.stderr


def test_example_config_printed(monkeypatch, tmp_path):
    code, out = run(["config", "--example"], monkeypatch, tmp_path)
    assert code == 0 and "[network]" in out and "pool" in out


def test_env_prints_docker_host(monkeypatch, tmp_path):
    import pwd
    users = [p.pw_name for p in pwd.getpwall() if 1000 <= p.pw_uid < 65534]
    if not users:
        pytest.skip("no ordinary user on this host")
    code, out = run(["env", users[0]], monkeypatch, tmp_path, run_dir="/run/x")
    assert code == 0
    assert out == f"export DOCKER_HOST=unix:///run/x/{users[0]}/docker.sock\n"


def test_help_of_every_command_has_an_example(capsys):
    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert commands == set(cli.EXAMPLES), "every command has an example, and every example a command"
    for name in sorted(commands):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        first = cli.EXAMPLES[name].splitlines()[0]
        assert f"Example:\n  {first}" in capsys.readouterr().out, name


def test_unexpected_error_is_one_line_without_traceback(monkeypatch, tmp_path, capsys):
    from berth.core import config

    def boom(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(config, "load", boom)
    code, _ = run(["status"], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert not (tmp_path / "log").exists()
    assert err.strip().splitlines() == [
        "berth: unexpected error (RuntimeError: disk on fire); details in the output of --debug"]


@pytest.mark.parametrize("how", ["module", "console script"])
def test_cli_runs_as_a_module_and_console_script(how, tmp_path):
    import os
    argv = [sys.executable, "-m", "berth"] if how == "module" else [os.path.join(os.path.dirname(sys.executable),
                                                                             "berth")]
    cfg = tmp_path / "b.toml"
    cfg.write_text("[network]\npool = '10.99.0.0/16'\n")
    r = subprocess.run([*argv, "--config", str(cfg), "config", "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith(f"{cfg}: ok (pool 10.99.0.0/16"), r.stderr


@pytest.mark.parametrize("euid, words", [(0, "the policy proxy is not running"),
                                          (4321, "nothing answers on your Docker socket")])
def test_refusals_with_no_proxy_is_one_line(euid, words, monkeypatch, tmp_path, capsys):
    import os
    monkeypatch.setattr(os, "geteuid", lambda: euid)  # root asks the control socket, a user their own socket
    code, out = run(["refusals"], monkeypatch, tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and out == "" and words in err and len(err.strip().splitlines()) == 1, err
