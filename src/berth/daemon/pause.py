"""The pause image for the net container, built from a static binary on the host.

No registry is needed or used: the image is a one-file tarball fed to
`docker import`. catatonit in pause mode (-P) does nothing, reaps nothing it
does not have to, and exits on SIGTERM, so stopping it is instant. Static
busybox `sleep` is the fallback; as PID 1 it ignores SIGTERM, hence
STOPSIGNAL SIGKILL for it.
"""

import io
import struct
from dataclasses import dataclass

from berth.core.errors import MissingBinary

PT_INTERP = 3


@dataclass(frozen=True)
class PauseRecipe:
    tag: str
    binary: str          # host path of the static binary
    name_in_image: str
    changes: tuple       # Dockerfile-style instructions for `docker import --change`


CANDIDATES = (
    ("catatonit", ("/usr/bin/catatonit", "/usr/libexec/catatonit/catatonit"),
     ('ENTRYPOINT ["/pause", "-P"]',)),
    ("busybox", ("/bin/busybox", "/usr/bin/busybox"),
     ('ENTRYPOINT ["/pause", "sleep", "2147483647"]', "STOPSIGNAL SIGKILL")),
)


def is_static_elf(head):
    """True for an ELF executable without a program interpreter (PT_INTERP).

    `head` is the file's first bytes (4 KiB is plenty for the headers).
    """
    if len(head) < 64 or head[:4] != b"\x7fELF":
        return False
    is64, little = head[4] == 2, head[5] == 1
    end = "<" if little else ">"
    if is64:
        phoff, = struct.unpack_from(end + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
    else:
        phoff, = struct.unpack_from(end + "I", head, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(head):
            return False
        p_type, = struct.unpack_from(end + "I", head, off)
        if p_type == PT_INTERP:
            return False
    return phnum > 0


def find_recipe(candidates=CANDIDATES):
    for kind, paths, changes in candidates:
        for path in paths:
            try:
                with open(path, "rb") as f:
                    if is_static_elf(f.read(4096)):
                        return PauseRecipe(f"berth/pause:{kind}", path, "pause", changes)
            except OSError:
                continue
    raise MissingBinary("no static catatonit or busybox found for the net container's pause image",
                        hint="apt-get install catatonit (or busybox-static), "
                             "or set [net_container].image to an image you imported")


def tarball(recipe):
    """The image's root filesystem: one executable file."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tar.gettarinfo(recipe.binary, arcname=recipe.name_in_image)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with open(recipe.binary, "rb") as f:
            tar.addfile(info, f)
    return buf.getvalue()
