import pytest

from berth.slurm import gres


@pytest.mark.parametrize("text, names", [
    ("/dev/nvidia0", ["/dev/nvidia0"]),
    ("/dev/nvidia[0-3]", ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3"]),
    ("/dev/nvidia[0,2-3]", ["/dev/nvidia0", "/dev/nvidia2", "/dev/nvidia3"]),
    ("/dev/nvidia1,/dev/nvidia0", ["/dev/nvidia1", "/dev/nvidia0"]),
    ("node[01-03],gpu5", ["node01", "node02", "node03", "gpu5"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
])
def test_hostlist_expressions_expand_in_order(text, names):
    assert gres.expand(text) == names


def test_a_backwards_range_is_refused():
    with pytest.raises(ValueError):
        gres.expand("/dev/nvidia[3-1]")


def test_global_lines_come_before_the_nodes_own_each_in_file_order():
    text = """# a site's gres.conf
AutoDetect=off
NodeName=gpu[1-2] Name=gpu Type=a100 File=/dev/nvidia[2-3]
Name=gpu File=/dev/nvidia1   # every node
NodeName=gpu3 Name=gpu File=/dev/nvidia9
name=gpu file=/dev/nvidia0
Name=mps Count=100 File=/dev/nvidia0
"""
    layout = gres.gpu_layout(text, "gpu2")
    assert layout == gres.GpuLayout(("/dev/nvidia1", "/dev/nvidia0", "/dev/nvidia2", "/dev/nvidia3"), False)
    assert gres.gpu_layout(text, "gpu3").files == ("/dev/nvidia1", "/dev/nvidia0", "/dev/nvidia9")


def test_multiple_files_are_one_gpu_and_continued_lines_join():
    text = "Name=gpu MultipleFiles=/dev/nvidia0,/dev/nvidia-caps/cap1 \\\n  Type=a100\nName=gpu File=/dev/nvidia1\n"
    assert gres.gpu_layout(text, "n").files == ("/dev/nvidia0", "/dev/nvidia1")


@pytest.mark.parametrize("line, autodetect", [
    ("AutoDetect=nvml", True), ("AutoDetect=off", False), ("", False),
    ("NodeName=n AutoDetect=nvml", True), ("NodeName=other AutoDetect=nvml", False),
])
def test_autodetect_is_read_globally_or_for_this_node(line, autodetect):
    assert gres.gpu_layout(line + "\n", "n").autodetect is autodetect
