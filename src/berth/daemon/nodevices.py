"""A seccomp filter that keeps a hardened user's dockerd, and everything it
starts, from making device nodes.

dockerd extracts a user's tars as real root (`docker import`, `load`, `cp`,
a pull, a build's `ADD x.tar`, BuildKit's file operations), with mknod: a
`c 1:3` entry in a user's tar became a working /dev/mem-like node on the
host and, in a container's root filesystem, a node Docker's default device
rules let the container open (`c 5:1`, the console). Under this filter
mknod(2) and mknodat(2) of a character or block device fail with EPERM, so
such a tar is refused by dockerd itself ("operation not permitted"), as it
is everywhere a process lacks the right to make devices. Overlay whiteouts
(a character device 0:0, which the overlay2 driver makes for a deleted
file) and FIFOs are still made.

The filter is inherited across fork and exec and cannot be removed, so it
holds for dockerd's children too (its untar helpers, docker-proxy, and the
runc that BuildKit runs for build steps). Loaded by root, it needs no
no_new_privs. Run as a script (`python3 -I -S nodevices.py PROGRAM ARG...`)
it loads the filter and execs PROGRAM: the form a systemd unit uses.

Pure but for `load`; stdlib only, so the script runs without berth on the
interpreter's path.
"""

import ctypes
import errno
import os
import struct
import sys

# linux/audit.h; syscall numbers per architecture (mknod, mknodat), with the
# argument index of `mode` in each (`dev` follows it).
AUDIT_ARCH = {
    "x86_64": 0xC000003E, "i386": 0x40000003, "aarch64": 0xC00000B7, "arm": 0x40000028,
    "ppc64le": 0xC0000015, "s390x": 0x80000016, "riscv64": 0xC00000F3,
}
X32_BIT = 0x40000000
SYSCALLS = {  # arch -> ((nr, mode argument index), ...)
    "x86_64": ((133, 1), (259, 2), (X32_BIT | 133, 1), (X32_BIT | 259, 2)),
    "i386": ((14, 1), (297, 2)),
    "aarch64": ((33, 2),),
    "arm": ((14, 1), (324, 2)),
    "ppc64le": ((14, 1), (288, 2)),
    "s390x": ((14, 1), (290, 2)),
    "riscv64": ((33, 2),),
}
# Which ABIs a kernel of each machine runs (compat ones are filtered too).
ABIS = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm"), "ppc64le": ("ppc64le",),
        "s390x": ("s390x",), "riscv64": ("riscv64",)}

S_IFMT, S_IFCHR, S_IFBLK = 0o170000, 0o020000, 0o060000

# linux/filter.h and linux/seccomp.h
BPF_LD_W_ABS = 0x20
BPF_ALU_AND_K = 0x54
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
NR_OFFSET, ARCH_OFFSET, ARGS_OFFSET = 0, 4, 16


class Unsupported(OSError):
    pass


def _insn(code, k=0, jt=0, jf=0):
    return (code, jt, jf, k)


def program(machine):
    """The filter for a kernel of `machine` (os.uname().machine), as a list of
    (code, jt, jf, k) instructions. Raises Unsupported for another machine."""
    abis = ABIS.get(machine)
    if abis is None:
        raise Unsupported(f"no device-node filter for {machine}")
    allow = [_insn(BPF_RET_K, SECCOMP_RET_ALLOW)]
    deny = [_insn(BPF_RET_K, SECCOMP_RET_ERRNO | errno.EPERM)]

    def mode_check(index):
        """Allow unless the mode is a character or block device with a device number other than 0:0."""
        mode, dev = ARGS_OFFSET + 8 * index, ARGS_OFFSET + 8 * (index + 1)  # low words (little endian)
        if sys.byteorder == "big":
            mode, dev = mode + 4, dev + 4
        return [
            _insn(BPF_LD_W_ABS, mode),
            _insn(BPF_ALU_AND_K, S_IFMT),
            _insn(BPF_JEQ_K, S_IFCHR, jt=1),
            _insn(BPF_JEQ_K, S_IFBLK, jt=0, jf=3),
            _insn(BPF_LD_W_ABS, dev),
            _insn(BPF_JEQ_K, 0, jt=1),
            *deny,
            *allow,
        ]

    def per_abi(abi):
        out = [_insn(BPF_LD_W_ABS, NR_OFFSET)]
        checks = []
        for nr, index in SYSCALLS[abi]:
            checks.append((nr, mode_check(index)))
        # A jump per syscall number to its check; none matched: allow.
        tail = []
        jumps = []
        for nr, block in checks:
            jumps.append((nr, len(tail)))
            tail += block
        n = len(jumps)
        for i, (nr, offset) in enumerate(jumps):
            # From instruction i (0-based among the jumps), the allow after the
            # jumps is n - i - 1 ahead; block k starts after it.
            out.append(_insn(BPF_JEQ_K, nr, jt=n - i - 1 + 1 + offset, jf=0))
        out += allow
        out += tail
        return out

    prog = [_insn(BPF_LD_W_ABS, ARCH_OFFSET)]
    bodies = [per_abi(abi) for abi in abis]
    # Arch dispatch: jeq arch_i -> body_i; no match: allow.
    n = len(abis)
    offset = 0
    for i, abi in enumerate(abis):
        prog.append(_insn(BPF_JEQ_K, AUDIT_ARCH[abi], jt=n - i - 1 + 1 + offset, jf=0))
        offset += len(bodies[i])
    prog += allow
    for body in bodies:
        prog += body
    for _, jt, jf, _ in prog:
        if jt > 255 or jf > 255:
            raise Unsupported("the filter's jumps do not fit")
    return prog


def encode(prog):
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in prog)


def load(machine=None):
    """Load the filter into this process (and so everything it starts from
    now on). Raises Unsupported where the kernel or machine has no way to."""
    load_encoded(encode(program(machine or os.uname().machine)))


def load_encoded(code):
    buf = ctypes.create_string_buffer(code)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(code) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise Unsupported(err, f"seccomp filter refused: {os.strerror(err)}")


def main(argv):
    if len(argv) < 2:
        print("usage: nodevices.py PROGRAM [ARG...]", file=sys.stderr)
        return 2
    try:
        load()
    except OSError as e:
        print(f"berth: cannot keep {argv[1]} from making device nodes: {e}", file=sys.stderr)
        return 1
    os.execv(argv[1], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
