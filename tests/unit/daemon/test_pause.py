import io
import struct
import tarfile

from berth.daemon import pause


def elf64(with_interp):
    """A minimal ELF64 header with one or two program headers."""
    phoff, phentsize = 64, 56
    types = [1] + ([pause.PT_INTERP] if with_interp else [])
    head = bytearray(phoff + phentsize * len(types))
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 0x20, phoff)
    struct.pack_into("<HH", head, 0x36, phentsize, len(types))
    for i, t in enumerate(types):
        struct.pack_into("<I", head, phoff + i * phentsize, t)
    return bytes(head)


def test_static_detection():
    assert pause.is_static_elf(elf64(False))
    assert not pause.is_static_elf(elf64(True))
    assert not pause.is_static_elf(b"#!/bin/sh\n" + b"\0" * 100)


def test_recipe_prefers_first_static_candidate(tmp_path):
    dyn, static = tmp_path / "dyn", tmp_path / "static"
    dyn.write_bytes(elf64(True))
    static.write_bytes(elf64(False))
    cands = (("catatonit", (str(dyn),), ("A",)), ("busybox", (str(static),), ("B",)))
    r = pause.find_recipe(cands)
    assert r.tag == "berth/pause:busybox"
    assert r.binary == str(static)
    assert r.changes == ("B",)


def test_tarball_holds_one_executable(tmp_path):
    b = tmp_path / "bin"
    b.write_bytes(elf64(False))
    data = pause.tarball(pause.PauseRecipe("berth/pause:x", str(b), "pause", ()))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "pause" and member.mode == 0o755 and member.uid == 0


def test_missing_binaries_hint_the_package():
    import pytest

    from berth.core.errors import MissingBinary
    with pytest.raises(MissingBinary) as e:
        pause.find_recipe((("catatonit", ("/nonexistent",), ()),))
    assert "apt-get install catatonit" in e.value.one_line()
