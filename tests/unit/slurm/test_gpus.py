import pytest

from berth.slurm import gpus
from berth.slurm.gres import GpuLayout

SMI = """0, 0, GPU-aaaa
1, 1, GPU-bbbb
2, 3, GPU-dddd
3, 2, GPU-cccc
"""
LAYOUT = GpuLayout(("/dev/nvidia3", "/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2"), False)
MINORS = {"/dev/nvidia0": 0, "/dev/nvidia1": 1, "/dev/nvidia2": 2, "/dev/nvidia3": 3}


def test_nvidia_smis_table_is_read_and_na_minors_kept_as_none():
    assert gpus.parse_smi(SMI + "4, [N/A], MIG-eeee\ngarbage\n")[3:] == [
        gpus.SmiGpu(3, 2, "GPU-cccc"), gpus.SmiGpu(4, None, "MIG-eeee")]


@pytest.mark.parametrize("indices, names", [
    ((0,), ["GPU-dddd"]),            # Slurm's 0 is gres.conf's first file, minor 3: nvidia-smi's index 2
    ((1, 3), ["GPU-aaaa", "GPU-cccc"]),
    ((), []),
])
def test_slurms_index_goes_through_the_file_and_its_minor_to_the_uuid(indices, names):
    resolved = gpus.resolve(indices, LAYOUT, MINORS, gpus.parse_smi(SMI))
    assert [n for n, _ in resolved] == names


def test_without_nvidia_smi_a_gpu_is_named_by_its_minor():
    resolved = gpus.resolve((0, 2), LAYOUT, MINORS, None)
    assert resolved == [("3", 3), ("1", 1)]
    assert gpus.device_files(resolved) == ("/dev/nvidia3", "/dev/nvidia1")


def test_with_autodetect_and_no_files_slurms_index_is_nvml_s():
    auto = GpuLayout((), True)
    assert gpus.resolve((2,), auto, {}, gpus.parse_smi(SMI)) == [("GPU-dddd", 3)]
    assert gpus.resolve((2,), auto, {}, None) == [("2", None)]


def test_with_autodetect_the_listed_files_go_in_minor_order():
    auto = GpuLayout(("/dev/nvidia3", "/dev/nvidia1"), True)
    assert gpus.resolve((0,), auto, MINORS, None) == [("1", 1)]


@pytest.mark.parametrize("indices, devices, smi, says", [
    ((4,), MINORS, None, "gres.conf lists 4"),
    ((0,), {**MINORS, "/dev/nvidia3": None}, None, "/dev/nvidia3 .GPU 0 in gres.conf. is no character device"),
    ((0,), {**MINORS, "/dev/nvidia3": 7}, SMI, "no GPU of minor number 7"),
])
def test_a_gpu_berth_cannot_find_is_said_not_guessed(indices, devices, smi, says):
    with pytest.raises(gpus.UnknownGpu, match=says):
        gpus.resolve(indices, LAYOUT, devices, gpus.parse_smi(smi) if smi else None)


def test_device_numbers_reads_minors_of_character_devices_only(tmp_path):
    plain = tmp_path / "nvidia0"
    plain.write_text("")
    assert gpus.device_numbers(["/dev/null", str(plain), str(tmp_path / "gone")]) == {
        "/dev/null": 3, str(plain): None, str(tmp_path / "gone"): None}


def test_no_nvidia_smi_is_none_and_a_failing_one_is_an_error(tmp_path):
    assert gpus.nvidia_smi(None) is None
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    with pytest.raises(gpus.UnknownGpu, match="has failed"):
        gpus.nvidia_smi(str(fake))
    fake.write_text("#!/bin/sh\necho '0, 5, GPU-ffff'\n")
    assert gpus.nvidia_smi(str(fake)) == [gpus.SmiGpu(0, 5, "GPU-ffff")]
