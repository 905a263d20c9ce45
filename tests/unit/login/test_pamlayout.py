"""PAM files read as libpam reads them, and where berth's hook must sit."""

import os

import pytest

from berth.login import pamlayout

HERE = os.path.join(os.path.dirname(__file__), "..")  # tests/unit
with open(os.path.join(HERE, "..", "data", "debian12-sshd.pam")) as _f:
    DEBIAN_SSHD = _f.read()


def fake_fs(files):
    return lambda path: files.get(path)


def test_layout_findings_for_hand_written_lines():
    bad_order = ("session required pam_env.so user_readenv=1 envfile=/etc/default/locale\n"
                 "session optional pam_exec.so quiet stdout type=open_session /b/python -I -m berth pam\n")
    (f,) = pamlayout.findings("sshd", fake_fs({"/etc/pam.d/sshd": bad_order}))
    assert "line 1 of /etc/pam.d/sshd reads users' ~/.pam_environment before berth's hook" in f.problem
    old_line = "session optional pam_exec.so quiet stdout /usr/local/bin/berth pam --run-dir /run/berth\n"
    problems = [f.problem for f in pamlayout.findings("sshd", fake_fs({"/etc/pam.d/sshd": old_line}))]
    assert len(problems) == 2 and "close_session" in problems[0] and "-I" in problems[1]
    assert pamlayout.findings("sshd", fake_fs({"/etc/pam.d/sshd": DEBIAN_SSHD})) == []  # no hook: nothing


def test_pam_parser_follows_libpam_syntax():
    text = ("# comment\n-session optional pam_systemd.so\n"
            "session [success=ok default=bad] pam_selinux.so open # tail\n"
            "session required \\\n  pam_env.so user_readenv=1\n@include common-session\n")
    lines = pamlayout.parse(text, "f")
    assert [(x.kind, x.control, x.module) for x in lines] == [
        ("session", "optional", "pam_systemd.so"), ("session", "[success=ok default=bad]", "pam_selinux.so"),
        ("session", "required", "pam_env.so"), ("@include", "", "common-session")]
    assert lines[2].args == ("user_readenv=1",) and lines[2].lineno == 4


@pytest.mark.parametrize("args, reads", [
    ("user_readenv=1", True), ("user_readenv=01", True), ("user_readenv=2", True), ("user_readenv=1x", True),
    ("user_readenv=0", False), ("user_readenv=1 user_readenv=0", False), ("user_readenv=0 user_readenv=1", True),
    ("readenv=1", False), ("", False),
])
def test_user_readenv_is_read_as_pam_env_reads_it(args, reads):
    (line,) = pamlayout.parse(f"session required pam_env.so {args}\n", "f")
    assert pamlayout.reads_user_env(line) is reads
