"""The login digest: the run dir and uid range of a config, trusted only
while the config file is the one it was made from."""

import os

import pytest

from berth.core import config
from berth.lifecycle import logindigest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the digest is root's alone")


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "berth.toml"
    path.write_text('[paths]\nrun_dir = "/run/elsewhere"\n[users]\nmin_uid = 2000\n')
    return str(path), str(tmp_path / "digests")


def digest_of(path, directory):
    seen = logindigest.identity(path)
    assert logindigest.write(path, config.load(path), seen, directory)


def test_a_digest_says_what_the_config_says(setup):
    path, directory = setup
    digest_of(path, directory)
    assert logindigest.read(path, directory) == ("/run/elsewhere", 2000, 60000)
    assert os.stat(directory).st_mode & 0o777 == 0o700


def test_a_config_edited_or_replaced_is_read_again(setup):
    path, directory = setup
    digest_of(path, directory)
    with open(path, "a") as f:
        f.write("# a comment changes the size and the mtime\n")
    assert logindigest.read(path, directory) is None
    digest_of(path, directory)
    os.rename(path, path + ".old")
    with open(path, "w") as f:
        f.write(open(path + ".old").read())
    assert logindigest.read(path, directory) is None


def test_a_digest_of_another_berth_version_is_not_trusted(setup, monkeypatch):
    path, directory = setup
    digest_of(path, directory)
    monkeypatch.setattr(logindigest, "__version__", "9.9.9")
    assert logindigest.read(path, directory) is None


def test_a_config_that_changed_while_it_was_read_leaves_a_digest_nobody_trusts(setup):
    path, directory = setup
    seen = logindigest.identity(path)
    cfg = config.load(path)
    with open(path, "a") as f:
        f.write("[login]\ndeadline = 5\n")
    logindigest.write(path, cfg, seen, directory)
    assert logindigest.read(path, directory) is None


def test_a_digest_anyone_but_root_could_have_written_is_ignored(setup):
    path, directory = setup
    digest_of(path, directory)
    os.chown(logindigest.path_for(path, directory), 1000, 1000)
    assert logindigest.read(path, directory) is None


def test_no_config_file_is_a_config_too():
    assert logindigest.identity("/nonexistent/berth.toml") == "absent"
    assert logindigest.path_for("/etc/berth/berth.toml", "/d") == "/d/%2Fetc%2Fberth%2Fberth.toml"
