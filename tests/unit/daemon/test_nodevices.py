"""The device-node filter, run by a small classic-BPF interpreter over
seccomp_data as the kernel lays it out (little endian here)."""

import errno
import struct

import pytest

from berth.daemon import nodevices as nd

ALLOW, DENY = nd.SECCOMP_RET_ALLOW, nd.SECCOMP_RET_ERRNO | errno.EPERM


def run(prog, nr, arch, args):
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == nd.BPF_LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == nd.BPF_ALU_AND_K:
            acc &= k
        elif code == nd.BPF_JEQ_K:
            pc += jt if acc == k else jf
        elif code == nd.BPF_RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


def mknod_args(index, mode, dev):
    args = [0] * 6
    args[index], args[index + 1] = mode, dev
    return args


CHR_NULL = (nd.S_IFCHR | 0o666, (1 << 8) | 3)


@pytest.mark.parametrize("machine", sorted(nd.ABIS))
def test_every_abi_refuses_devices_and_keeps_the_rest(machine):
    prog = nd.program(machine)
    assert nd.encode(prog)  # fits the kernel's layout
    for abi in nd.ABIS[machine]:
        arch = nd.AUDIT_ARCH[abi]
        for nr, index in nd.SYSCALLS[abi]:
            assert run(prog, nr, arch, mknod_args(index, *CHR_NULL)) == DENY
            assert run(prog, nr, arch, mknod_args(index, nd.S_IFBLK | 0o600, (8 << 8))) == DENY
            assert run(prog, nr, arch, mknod_args(index, nd.S_IFCHR, 0)) == ALLOW  # an overlay whiteout
            assert run(prog, nr, arch, mknod_args(index, 0o010644, 0)) == ALLOW  # a FIFO
            assert run(prog, nr, arch, mknod_args(index, 0o100644, 0)) == ALLOW  # a regular file
        assert run(prog, 1, arch, mknod_args(1, *CHR_NULL)) == ALLOW  # another syscall with such arguments


def test_an_unknown_abi_is_let_through_and_an_unknown_machine_refused():
    prog = nd.program("x86_64")
    assert run(prog, 133, 0x12345678, mknod_args(1, *CHR_NULL)) == ALLOW
    with pytest.raises(nd.Unsupported):
        nd.program("sparc64")
