import os

import pytest

from berth.core import config
from berth.core.errors import BerthError
from berth.login import pamlayout
from berth.ops import install

HERE = os.path.join(os.path.dirname(__file__), "..")  # tests/unit
REPO = os.path.join(HERE, "..", "..")
SSHD = "@include common-auth\nsession required pam_limits.so\n"
PY = "/opt/berth/bin/python"
with open(os.path.join(HERE, "..", "data", "debian12-sshd.pam")) as _f:
    DEBIAN_SSHD = _f.read()


def fake_fs(files):
    return lambda path: files.get(path)


def apply(files, changes):
    files = dict(files)
    for c in changes:
        if c.content is None:
            del files[c.path]
        else:
            files[c.path] = c.content
    return files


def test_shipped_files_match_the_rendered_defaults():
    cfg = config.Config()
    with open(os.path.join(REPO, "pam", "berth-session")) as f:
        assert f.read() == install.pam_block(cfg, install.DEFAULT_PYTHON)
    with open(os.path.join(REPO, "pam", "pam_env.conf")) as f:
        assert f.read() == install.env_conf(cfg)
    with open(os.path.join(REPO, "profile.d", "berth.sh")) as f:
        assert f.read() == install.profile_script(cfg)


def test_block_names_this_berth_and_config_values():
    cfg = config.parse({"users": {"min_uid": 2000, "max_uid": 3000}, "paths": {"run_dir": "/run/x"}})
    block = install.pam_block(cfg, PY, "/etc/other.toml")
    assert "session [success=ignore default=2] pam_succeed_if.so quiet uid >= 2000 uid <= 3000" in block
    assert ("pam_exec.so quiet stdout type=open_session /opt/berth/bin/python -I -m berth pam "
            "--run-dir /run/x --config /etc/other.toml") in block
    assert "DOCKER_HOST DEFAULT=unix:///run/x/@{PAM_USER}/docker.sock" in install.env_conf(cfg)
    assert '"/run/x/' in install.profile_script(cfg)


def test_install_twice_is_install_once_and_uninstall_restores():
    cfg = config.Config()
    files = {"/etc/pam.d/sshd": SSHD}
    once = apply(files, install.plan_install(cfg, PY, fake_fs(files)))
    assert install.BEGIN in once["/etc/pam.d/sshd"] and once["/etc/pam.d/sshd"].startswith(SSHD)
    assert set(once) == {"/etc/pam.d/sshd", install.ENV_CONF, install.PROFILE, install.CONFIG, install.CRON,
                         install.COMPLETION, install.LOGROTATE}
    assert once[install.LOGROTATE].splitlines()[2] == "/var/log/berth/*.log {"
    assert "*/5 * * * * root /opt/berth/bin/python -I -m berth reap" in once[install.CRON]
    assert install.plan_install(cfg, PY, fake_fs(once)) == []
    gone = apply(once, install.plan_uninstall(fake_fs(once)))
    assert gone == {"/etc/pam.d/sshd": SSHD, install.CONFIG: once[install.CONFIG]}
    assert install.plan_uninstall(fake_fs(gone)) == []


def test_a_changed_berth_path_replaces_the_block():
    cfg = config.Config()
    files = {"/etc/pam.d/sshd": SSHD}
    old = apply(files, install.plan_install(cfg, "/old/bin/python", fake_fs(files)))
    new = apply(old, install.plan_install(cfg, "/new/bin/python", fake_fs(old)))
    assert new["/etc/pam.d/sshd"].count(install.BEGIN) == 1
    assert "/new/bin/python" in new["/etc/pam.d/sshd"] and "/old/bin/python" not in new["/etc/pam.d/sshd"]


def test_uninstall_leaves_files_it_did_not_write():
    files = {"/etc/pam.d/sshd": SSHD, install.PROFILE: "# my own profile script\n"}
    assert install.plan_uninstall(fake_fs(files)) == []


def test_missing_pam_service_is_a_clear_error():
    with pytest.raises(BerthError) as e:
        install.plan_install(config.Config(), "/b", fake_fs({}), services=("nosuch",))
    assert "/etc/pam.d/nosuch does not exist" in e.value.one_line()


def test_host_apply_keeps_a_backup(tmp_path):
    host = install.Host(str(tmp_path))
    (tmp_path / "etc/pam.d").mkdir(parents=True)
    (tmp_path / "etc/pam.d/sshd").write_text(SSHD)
    for c in install.plan_install(config.Config(), PY, host.read):
        host.apply(c)
    assert (tmp_path / "etc/pam.d/sshd.berth-backup").read_text() == SSHD
    assert (tmp_path / "etc/profile.d/berth.sh").exists()


def test_profile_script_is_silent_posix_sh(tmp_path):
    import subprocess
    script = install.profile_script(config.parse({"paths": {"run_dir": str(tmp_path)}}))
    env = {"PATH": "/usr/bin:/bin", "USER": "alice"}
    r = subprocess.run(["sh", "-c", script + '\necho "[$DOCKER_HOST]"'], env=env, capture_output=True, text=True)
    assert r.stdout == "[]\n" and r.stderr == ""
    import socket
    (tmp_path / "alice").mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "alice" / "docker.sock"))
        r = subprocess.run(["sh", "-c", script + '\necho "[$DOCKER_HOST]"'], env=env, capture_output=True, text=True)
        assert r.stdout == f"[unix://{tmp_path}/alice/docker.sock]\n" and r.stderr == ""
        r = subprocess.run(["sh", "-c", script + '\necho "[$DOCKER_HOST]"'], env={**env, "DOCKER_HOST": "tcp://x"},
                           capture_output=True, text=True)
        assert r.stdout == "[tcp://x]\n"


def test_systemd_hosts_get_a_timer_instead_of_cron():
    cfg = config.Config()
    files = {"/etc/pam.d/sshd": SSHD}
    with_cron = apply(files, install.plan_install(cfg, "/b", fake_fs(files)))
    with_timer = apply(with_cron, install.plan_install(cfg, "/b", fake_fs(with_cron), schedule="systemd"))
    assert install.CRON not in with_timer
    assert "ExecStart=/b -I -m berth reap" in with_timer[install.REAP_SERVICE]
    assert "OnUnitActiveSec=5min" in with_timer[install.REAP_TIMER]
    gone = apply(with_timer, install.plan_uninstall(fake_fs(with_timer)))
    assert install.REAP_SERVICE not in gone and install.REAP_TIMER not in gone


def test_reaper_units_pass_systemd_analyze_verify(tmp_path):
    import shutil
    import subprocess
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    units = install.schedule_files(config.Config(), "/bin/true", schedule="systemd")
    for path, text in units.items():
        (tmp_path / os.path.basename(path)).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "berth-reap.timer"),
                        str(tmp_path / "berth-reap.service")], capture_output=True, text=True)
    problems = [line for line in r.stderr.splitlines() if "berth-reap" in line]
    assert problems == [], r.stderr


def test_bash_completion(tmp_path):
    import subprocess
    script = install.template("berth.bash")

    def complete(*words):
        line = " ".join(words)
        cmd = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _berth; echo \"${{COMPREPLY[*]}}\"")
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True).stdout.split()

    assert complete("berth", "u") == ["up", "uninstall"]
    assert complete("berth", "down", "--p") == ["--purge"]
    assert complete("berth", "reap", "--d") == ["--dry-run"]
    assert complete("berth", "--config", "/etc/x.toml", "st") == ["status"]
    assert "--json" in complete("berth", "doctor", "--")


def test_on_debians_sshd_the_block_goes_above_the_pam_env_that_reads_users_files():
    files = {"/etc/pam.d/sshd": DEBIAN_SSHD, "/etc/pam.d/common-session": "session required pam_unix.so\n"}
    after = apply(files, install.plan_install(config.Config(), PY, fake_fs(files)))["/etc/pam.d/sshd"]
    lines = after.splitlines()
    hook = next(i for i, line in enumerate(lines) if "pam_exec.so" in line)
    reader = next(i for i, line in enumerate(lines) if "user_readenv=1" in line and not line.startswith("#"))
    assert hook < reader
    # every stock line is kept, in its order; the comments above a line stay with it
    assert [line for line in lines if line not in install.pam_block(config.Config(), PY).splitlines()] == \
        DEBIAN_SSHD.splitlines()
    assert lines[lines.index("# END berth") + 1].startswith("# In Debian 4.0 (etch)")
    assert pamlayout.findings("sshd", fake_fs({**files, "/etc/pam.d/sshd": after})) == []
    assert install.plan_uninstall(fake_fs({"/etc/pam.d/sshd": after}))[0].content == DEBIAN_SSHD


def test_a_reader_in_an_included_file_puts_the_block_above_the_include():
    files = {"/etc/pam.d/sshd": "@include common-auth\n@include common-session\nsession required pam_limits.so\n",
             "/etc/pam.d/common-session": "session required pam_env.so user_readenv=1\n"}
    after = apply(files, install.plan_install(config.Config(), PY, fake_fs(files)))["/etc/pam.d/sshd"]
    assert after.index("pam_exec.so") < after.index("@include common-session")


def test_a_reader_in_the_auth_stack_is_refused_with_the_line_to_change():
    files = {"/etc/pam.d/sshd": "auth required pam_env.so user_readenv=1\nsession required pam_limits.so\n"}
    with pytest.raises(BerthError) as e:
        install.plan_install(config.Config(), PY, fake_fs(files))
    assert "line 1 of /etc/pam.d/sshd" in e.value.message and "user_readenv=1" in e.value.hint


def test_common_session_is_checked_in_every_service_that_includes_it():
    files = {"/etc/pam.d/common-session": "session required pam_unix.so\n",
             "/etc/pam.d/login": "session required pam_env.so user_readenv=1\n@include common-session\n"}
    with pytest.raises(BerthError) as e:
        install.plan_install(config.Config(), PY, fake_fs(files), services=("common-session",),
                             others=("common-session", "login"))
    assert "/etc/pam.d/login" in e.value.message


def test_a_jump_over_where_the_block_must_go_is_refused():
    """The admin's jump skipped 2 lines; with berth's block among them it would land elsewhere."""
    files = {"/etc/pam.d/sshd": ("session [success=2 default=ignore] pam_succeed_if.so quiet user ingroup kiosk\n"
                                 "session required pam_env.so user_readenv=1\n"
                                 "session optional pam_mount.so\n"
                                 "session required pam_limits.so\n")}
    with pytest.raises(BerthError) as e:
        install.plan_install(config.Config(), PY, fake_fs(files))
    assert "line 1 of /etc/pam.d/sshd jumps over lines" in e.value.message


def test_berths_own_jump_and_jumps_that_land_before_it_are_fine():
    files = {"/etc/pam.d/sshd": ("session [success=1 default=ignore] pam_succeed_if.so quiet user ingroup kiosk\n"
                                 "session optional pam_mount.so\n"
                                 "session required pam_env.so user_readenv=1\n")}
    after = apply(files, install.plan_install(config.Config(), PY, fake_fs(files)))
    assert pamlayout.findings("sshd", fake_fs(after)) == []


def _profile_docker_host(tmp_path, env, sockets):
    import socket
    import subprocess

    run_dir = tmp_path / "run"
    os.makedirs(run_dir / "alice", exist_ok=True)
    held = []
    for name in sockets:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(run_dir / "alice" / name))
        held.append(s)
    cfg = config.parse({"paths": {"run_dir": str(run_dir)}})
    script = install.profile_script(cfg) + 'printf %s "${DOCKER_HOST:-}"\n'
    try:
        r = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                           env={"USER": "alice", **{k: v.replace("RUN", str(run_dir)) for k, v in env.items()}})
    finally:
        for s in held:
            s.close()
    return r.stdout.replace(str(run_dir), "RUN")


def test_the_profile_script_takes_an_adopted_jobs_socket_over_the_logins(tmp_path):
    login = "unix://RUN/alice/docker.sock"
    assert _profile_docker_host(tmp_path, {}, ["docker.sock"]) == login
    # pam_slurm_adopt sets SLURM_JOB_ID; pam_env set the login socket before the shell
    adopted = {"SLURM_JOB_ID": "42", "DOCKER_HOST": login}
    assert _profile_docker_host(tmp_path / "a", adopted, ["docker.sock", "job-42.sock"]) == \
        "unix://RUN/alice/job-42.sock"
    assert _profile_docker_host(tmp_path / "b", {"SLURM_JOB_ID": "42"}, ["docker.sock"]) == login  # no job socket
    mine = {"SLURM_JOB_ID": "42", "DOCKER_HOST": "tcp://elsewhere:2375"}
    assert _profile_docker_host(tmp_path / "c", mine, ["docker.sock", "job-42.sock"]) == "tcp://elsewhere:2375"


def test_slurm_hooks_are_root_run_wrappers_that_uninstall_removes():
    cfg = config.Config()
    files = {"/etc/pam.d/sshd": SSHD}
    changes = install.plan_install(cfg, PY, fake_fs(files), slurm=True)
    wrappers = {c.path: c for c in changes if c.path.startswith(install.SLURM_DIR)}
    assert sorted(wrappers) == [f"{install.SLURM_DIR}/{h}" for h in ("epilog", "prolog", "task-prolog")]
    prolog = wrappers[f"{install.SLURM_DIR}/prolog"]
    assert prolog.mode == 0o755 and prolog.content.startswith("#!/bin/sh\n")
    assert prolog.content.splitlines()[-1] == \
        "exec /opt/berth/bin/python -I -m berth slurm prolog --config /etc/berth/berth.toml"
    installed = apply(files, changes)
    assert install.plan_install(cfg, PY, fake_fs(installed), slurm=True) == []
    assert not any(p.startswith(install.SLURM_DIR) for p in apply(installed, install.plan_uninstall(
        fake_fs(installed))))
    assert not any(c.path.startswith(install.SLURM_DIR) for c in install.plan_install(cfg, PY, fake_fs(files)))


def test_the_slurm_conf_lines_name_the_wrappers():
    assert install.slurm_conf_lines() == [
        "Prolog=/usr/local/lib/berth/slurm/prolog", "Epilog=/usr/local/lib/berth/slurm/epilog",
        "TaskProlog=/usr/local/lib/berth/slurm/task-prolog", "PrologFlags=Alloc"]
    assert "Prolog=/etc/slurm/prolog.d/*" in install.slurm_advice()


def test_berth_install_slurm_into_a_scratch_root_writes_wrappers_that_run(tmp_path):
    import subprocess
    import sys

    from berth import cli

    root, run_dir = tmp_path / "root", tmp_path / "run"
    (root / "etc/pam.d").mkdir(parents=True)
    (root / "etc/pam.d/sshd").write_text(SSHD)
    conf = tmp_path / "berth.toml"
    conf.write_text(f'[paths]\nrun_dir = "{run_dir}"\n')
    python = os.path.abspath(sys.executable)
    out = __import__("io").StringIO()
    assert cli.main(["--config", str(conf), "install", "--root", str(root), "--slurm", "--python", python],
                    out=out) == 0
    assert "    PrologFlags=Alloc" in out.getvalue()
    wrapper = root / install.SLURM_DIR.lstrip("/") / "task-prolog"
    assert os.stat(wrapper).st_mode & 0o777 == 0o755
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    (run_dir / me).mkdir(parents=True)
    (run_dir / me / "job-7.sock").write_text("")
    # as slurmstepd runs it: no PATH, the task's environment
    r = subprocess.run([str(wrapper)], env={"SLURM_JOB_ID": "7", "BERTH_CONFIG": "/nonexistent"},
                       capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, f"export DOCKER_HOST=unix://{run_dir}/{me}/job-7.sock\n"), r.stderr
