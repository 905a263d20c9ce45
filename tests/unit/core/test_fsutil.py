import os
import stat

from berth.core import fsutil
from berth.net import blocks


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_ensure_dir_narrows_a_directory_an_older_berth_left_open(tmp_path):
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    fsutil.ensure_dir(d, 0o711)
    assert mode(d) == 0o711
    fsutil.ensure_dir(d, 0o755)  # never widens
    assert mode(d) == 0o711


def test_ensure_private_file(tmp_path):
    f = tmp_path / "leases.json"
    f.write_text("{}")
    os.chmod(f, 0o644)
    fsutil.ensure_private_file(f)
    assert mode(f) == 0o600
    fsutil.ensure_private_file(tmp_path / "absent")  # nothing to do


def test_block_of_bridge_is_the_bridge_subnets_parent():
    layout = blocks.layout(blocks.ipaddress.IPv4Network("10.213.7.0/24"))
    assert str(blocks.block_of_bridge(str(layout.bridge_net))) == "10.213.7.0/24"


def test_traverse_only_for_one_uid(tmp_path):
    d = tmp_path / "alice"
    d.mkdir()
    if fsutil.traverse_only_for(str(d), 4321):
        assert mode(d) == 0o710  # the group bits show the ACL's mask
        assert len(os.getxattr(str(d), "system.posix_acl_access")) == 4 + 5 * 8
    else:  # no ACLs on this filesystem
        assert mode(d) == 0o711


def test_a_path_root_will_run_must_be_roots_all_the_way_up(tmp_path):
    import pytest

    from berth.core.errors import NotTrusted
    if os.geteuid() != 0:
        pytest.skip("needs files owned by root")
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    fsutil.check_trusted_path(str(venv / "python"))  # /tmp is sticky: fine above
    os.chmod(tmp_path / "venv", 0o777)  # a user could swap bin/ for their own
    with pytest.raises(NotTrusted, match="venv"):
        fsutil.check_trusted_path(str(venv / "python"))


def test_a_bind_of_the_same_file_system_is_a_mount_point(tmp_path):
    from berth.core import fsutil
    info = tmp_path / "mountinfo"
    info.write_text("27 1 254:0 / / rw - ext4 /dev/vda rw\n"
                    "186 107 254:0 /tmp/x/pins /tmp/x/pins rw,relatime unbindable - ext4 /dev/vda rw\n"
                    "190 107 254:0 /tmp/a\\040b /tmp/a\\040b rw - ext4 /dev/vda rw\n")
    assert fsutil.is_mount_point("/tmp/x/pins", str(info))
    assert fsutil.is_mount_point("/tmp/a b", str(info))
    assert not fsutil.is_mount_point("/tmp/x", str(info))
    assert fsutil.is_mount_point("/", "/proc/self/mountinfo")
