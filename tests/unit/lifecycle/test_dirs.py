"""A hardened user's data-root must be passable by others all the way up."""

import os

import pytest

from berth.core.errors import DaemonError
from berth.lifecycle import dirs


def test_every_directory_up_to_the_root_is_checked(tmp_path):
    path = tmp_path / "state" / "users"
    path.mkdir(parents=True)
    os.chmod(tmp_path / "state", 0o711)
    os.chmod(path, 0o711)
    os.chmod(tmp_path, 0o700)
    with pytest.raises(DaemonError) as e:
        dirs.check_passable(str(path))
    assert e.value.message.startswith(f"{tmp_path} is not passable")


def test_a_closed_parent_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "state" / "users"
    path.mkdir(parents=True)
    os.chmod(tmp_path, 0o711)
    os.chmod(tmp_path / "state", 0o700)
    with pytest.raises(DaemonError) as e:
        dirs.check_passable(str(path))
    assert e.value.message.startswith(f"{tmp_path / 'state'} is not passable")
    assert f"chmod o+x {tmp_path / 'state'}" in e.value.hint
