import pytest

from berth import users
from berth.errors import UserRefused


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
    from berth import errors
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, errors.BerthError):
            assert not issubclass(cls, OSError), name


def test_berth_is_a_reserved_name():
    with pytest.raises(UserRefused, match="reserved"):
        users.check_name("berth")
    assert users.lookup("berth") is None
