"""Files root can trust: made by us, written atomically, checked before use."""

import errno
import os
import stat
import time

from berth.core.errors import BerthError, NotTrusted


def check_trusted(path, st=None):
    """Refuse a path not owned by root (or us) or writable by group/others.

    Root acts on what these files say (which pid to signal, which block a
    user has); a file a user could write would let them steer root.
    """
    st = st or os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise NotTrusted(f"{path} is a symlink; berth does not follow links it did not make",
                         hint=f"remove it (rm {path}) and run again")
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NotTrusted(
            f"{path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):o}; "
            f"berth only trusts its own files",
            hint=f"chown root:root {path} && chmod go-w {path}, or remove it")


def check_trusted_path(path):
    """check_trusted on `path` and every directory above it, for what root
    will run or import: a user who can write any of them can replace it.
    A sticky directory (/tmp) is fine above: others cannot rename in it.
    `path` may be a link; check its target with another call.

    Raises:
        NotTrusted: naming the first component a user could change.
    """
    path = os.path.abspath(path)
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode):  # a link in a root-only directory: only root can change it
        check_trusted(path, st)
    parent = os.path.dirname(path)
    while True:
        st = os.stat(parent)
        if not (st.st_mode & stat.S_ISVTX and st.st_uid == 0):
            check_trusted(parent, st)
        if parent == "/":
            return
        parent = os.path.dirname(parent)


def ensure_dir(path, mode=0o755):
    """mkdir -p that checks every directory it did not just create, and
    narrows a directory of berth's that is more open than `mode` (one an
    older berth made 0755, so any user could list the users in it)."""
    path = os.fspath(path)
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as e:
        raise BerthError(f"cannot create {path}: {e.strerror}",
                         hint="run berth as root and check the [paths] of the config") from e
    st = os.lstat(path)
    check_trusted(path, st)
    if stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)
    return path


# POSIX ACL xattr layout (linux/posix_acl_xattr.h): a version, then
# (tag, perm, id) entries in tag order.
_ACL_VERSION, _USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 2, 0x01, 0x02, 0x04, 0x10, 0x20
_NO_ID = 0xFFFFFFFF


def traverse_only_for(path, uid):
    """Let `uid`, and nobody else but root, pass through directory `path`:
    mode 0700 plus a POSIX ACL entry u:<uid>:--x. Others cannot even stat
    what lies inside (when the user logged in, whether their daemon runs).
    Where the filesystem has no ACLs, falls back to 0711; returns False then."""
    import struct

    entries = ((_USER_OBJ, 7, _NO_ID), (_USER, 1, uid), (_GROUP_OBJ, 0, _NO_ID), (_MASK, 1, _NO_ID),
               (_OTHER, 0, _NO_ID))
    blob = struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", blob, follow_symlinks=False)
        return True
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        os.chmod(path, 0o711)
        return False


def ensure_private_file(path, mode=0o600):
    """Narrow an existing file of berth's to `mode` (see ensure_dir)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode:
        os.chmod(path, stat.S_IMODE(st.st_mode) & mode)


def atomic_write(path, data, mode=0o644):
    """Write via a temp file in the same directory, fsync, rename.

    A crash or a full disk leaves either the old file or the new one, never a
    torn one.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode()
    directory = os.path.dirname(path) or "."
    # Our own unique name rather than tempfile's: the directory is root's
    # alone, O_EXCL refuses anything in the way, and tempfile's import is not
    # free on the login path.
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{time.monotonic_ns()}-{os.path.basename(path)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_error(path, e):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the filesystem of {os.path.dirname(path)} (df -h {os.path.dirname(path)})"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "run berth as root, on a writable filesystem"
    else:
        hint = "check the filesystem and the [paths] of the config"
    return BerthError(f"cannot write {path}: {e.strerror}; nothing was changed", hint=hint)


def read_trusted(path):
    """Read a small file we wrote; None when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symlink where our file should be
            check_trusted(path)
        raise
    with os.fdopen(fd, "rb") as f:
        check_trusted(path, os.fstat(f.fileno()))
        return f.read()


def read_text(path):
    """A system file's text, "" when it does not exist (/etc/subuid on a fresh host)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def is_mount_point(path, mountinfo="/proc/self/mountinfo"):
    """Whether a mount sits at `path` in this mount namespace. Unlike
    os.path.ismount, which compares devices, this sees a bind of a
    directory of the same file system (onto itself, say)."""
    path = os.path.abspath(path)
    with open(mountinfo, "rb") as f:
        for line in f:
            point = line.split(b" ", 5)[4]
            if _unoctal(point) == path:
                return True
    return False


def _unoctal(field):
    """A mountinfo path: space, tab, newline and backslash come as \\ooo."""
    out, i = bytearray(), 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return os.fsdecode(bytes(out))


def read_and_close(fd):
    """Everything a pipe's reading end gives until its writers are gone; the end is closed."""
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return data
    finally:
        os.close(fd)


def remove(path):
    """rm -f: already gone is success."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def log_tail(path, lines=3, size=4096, skip=None):
    """The last `lines` lines of a log (its last `size` bytes), joined with
    " | ", for a one-line error; lines starting with `skip` left out."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            tail = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    tail = [t for t in tail if not (skip and t.startswith(skip))][-lines:]
    return " | ".join(tail) or "(empty log)"
