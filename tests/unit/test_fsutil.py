import os
import stat

from berth import blocks, fsutil


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
