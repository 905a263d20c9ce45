import os

import pytest

from berth.core import users
from berth.core.errors import UserRefused


@pytest.mark.parametrize("name", ["../etc", "a b", "", "-rf", ".hidden", "a/b", "x" * 33, "al\nice", "ali$e"])
def test_bad_names_refused(name):
    with pytest.raises(UserRefused) as e:
        users.check_name(name)
    assert "not a valid user name" in e.value.one_line()


@pytest.mark.parametrize("name", ["alice", "bob_2", "Carol", "_svc", "d-e"])
def test_good_names(name):
    assert users.check_name(name) == name


def test_root_refused():
    with pytest.raises(UserRefused, match="root"):
        users.resolve("root", 1000)


def test_system_user_refused():
    with pytest.raises(UserRefused, match="below \\[users\\].min_uid"):
        users.resolve("daemon", 1000)


def test_unknown_user_refused():
    with pytest.raises(UserRefused, match="does not exist"):
        users.resolve("no_such_user_berth", 1000)


def test_uids_above_max_uid_are_refused_like_those_below_min_uid():
    with pytest.raises(UserRefused, match="above \\[users\\].max_uid = 60000"):
        users.resolve("nobody", 1000)
    assert users.resolve("nobody", 1000, 70000).uid == 65534


def test_a_second_name_for_a_uid_is_not_that_account(monkeypatch):
    import pwd
    getpwnam = pwd.getpwnam
    alias = pwd.struct_passwd(("toor", *getpwnam("nobody")[1:]))
    monkeypatch.setattr(users.pwd, "getpwnam", lambda n: alias if n == "toor" else getpwnam(n))
    assert users.lookup("toor") is None
    with pytest.raises(UserRefused, match="second name for uid 65534, whose account is 'nobody'"):
        users.resolve("toor", 1000, 70000)
    assert users.lookup("nobody").uid == 65534


def test_no_berth_error_is_an_oserror():
    from berth.core import errors
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.BerthError):
            assert not issubclass(cls, OSError), name


def test_berth_is_a_reserved_name():
    with pytest.raises(UserRefused, match="reserved"):
        users.check_name("berth")
    assert users.lookup("berth") is None


def test_the_names_of_berths_own_files_are_reserved_as_the_code_names_them(tmp_path):
    """<log_dir>/proxy.log, containerd.log, berth.log and <run_dir>/berth-proxy, berth-containerd
    are berth's: a user so named would share them (their log is <log_dir>/<user>.log, their
    run dir <run_dir>/<user>)."""
    from berth.core import paths
    from berth.daemon import containerd
    from berth.proxy import control as proxyctl

    logs, run, state = tmp_path / "log", tmp_path / "run", tmp_path / "state"
    shared = containerd.Shared(run, state, logs)
    own_logs = [proxyctl.ProxySupervisor(run, logs).log_file, shared.log_file, paths.own_log(logs, paths.BERTH_LOG)]
    own_dirs = [shared.dir, paths.proxy_dir(run)]
    assert all(os.path.dirname(p) == str(logs) and p.endswith(".log") for p in own_logs)
    assert all(os.path.dirname(p) == str(run) for p in own_dirs)
    names = {os.path.basename(p)[:-len(".log")] for p in own_logs} | {os.path.basename(p) for p in own_dirs}
    assert {"proxy", "containerd", "berth", "berth-proxy", "berth-containerd"} <= names
    for name in names:
        with pytest.raises(UserRefused, match="reserved"):
            users.check_name(name)
        assert users.lookup(name) is None
