"""Bind sources resolved as the user, and pinned where only root goes.

dockerd stats a bind source and runc mounts it as root, so the user's own
rights would count only on the last inode: a colleague's 0700 home guards
nothing. Instead, for each bind of a container berth forwards:

1. a forked child enters dockerd's mount namespace, takes the user's
   filesystem identity (fsuid, fsgid and supplementary groups: modes, ACLs
   and groups all count, as in the user's shell) and opens the path
   (O_PATH), making it first, as the user, where dockerd would have made a
   missing Binds source;
2. back as root, it binds that open file, not the path, onto a mountpoint
   of its own under `<run_dir>/<user>/pins/` (root's alone), which is what
   dockerd is given: a component the user swaps after step 1 changes
   nothing, since the path is never looked up again.

A pin's record (`<state_dir>/users/<user>/pins/<token>`: the user's path)
outlives a reboot; the container is re-pinned, as the user, each time it
is started through berth, and `docker inspect` shows the user's path, not
the pin. A pin whose container is gone (removed, `--rm`, pruned) is swept.
"""

import ctypes
import errno
import json
import logging
import os
import re
import secrets
import select
import signal
import socket

from berth.core.fsutil import is_mount_point, read_and_close

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_UNBINDABLE = 1, 32, 4096, 16384, 1 << 17
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
CHILD_TIMEOUT = 30.0
MAX_BINDS = 256      # bind mounts of one container
MAX_PINS = 4096      # pins one user's containers hold in all

log = logging.getLogger(__name__)
TOKEN = re.compile(r"[0-9a-f]{16}")


class Result:
    """What became of one source: `pin` (its mountpoint) or `error` (an errno)."""

    __slots__ = ("path", "pin", "error", "made")

    def __init__(self, path, pin=None, error=0, made=False):
        self.path, self.pin, self.error, self.made = path, pin, error, made

    def __repr__(self):
        return f"Result({self.path!r}, pin={self.pin!r}, error={self.error})"


_LIBC = None


def _libc():
    """libc, its functions looked up once, before any fork: in a child of a
    threaded process, dlopen or dlsym could wait on a lock another thread
    held at the fork, for good."""
    global _LIBC
    if _LIBC is None:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("setns", "mount", "umount2", "unshare", "prctl"):  # pins' and containercopy's
            getattr(libc, name)
        _LIBC = libc
    return _LIBC


def _check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _makedirs_as_user(path):
    """mkdir -p, each directory made by the caller (the user), 0755 as dockerd makes them."""
    parent = os.path.dirname(path)
    if parent != path and not _exists(parent):
        _makedirs_as_user(parent)
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass


def _exists(path):
    """Whether `path` exists, as far as the caller may know: a directory it
    cannot search raises (PermissionError), never reads as "missing"."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _close_all_but(keep):
    """No descriptor of the proxy's (other users' sockets, other pins'
    pipes) stays open in a child that may be slow: only `keep`."""
    top = os.sysconf("SC_OPEN_MAX")
    low = 3
    for fd in sorted(k for k in keep if k is not None and k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, top)


def _resolve_as_user(uid, gid, groups, requests, sock):
    """In a grandchild that is the user, wholly (real, effective and saved
    ids, groups; so no capability is left, and no /proc/<pid>/cwd of
    anyone else's can be followed): each path made if asked and missing,
    then opened O_PATH; one message each on `sock`, with the descriptor."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.umask(0o022)
    for path, create, _ in requests:
        made = False  # True once making it was tried: an error is then one of making it
        try:
            if create and not _exists(path):
                made = True
                _makedirs_as_user(path)
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            socket.send_fds(sock, [json.dumps({"error": 0, "made": made}).encode()], [fd])
            os.close(fd)
        except OSError as e:
            socket.send_fds(sock, [json.dumps({"error": e.errno or errno.EIO, "made": made}).encode()], [])


def _child(uid, gid, groups, ns_fd, requests, out_fd):
    """In the forked child (root): in dockerd's mount namespace, the paths
    resolved by a grandchild that is the user, each pinned; a JSON report
    on `out_fd`."""
    _close_all_but({out_fd, ns_fd})
    libc = _libc()
    _check(libc.setns(ns_fd, CLONE_NEWNS))
    if requests:
        _unbindable(libc, os.path.dirname(requests[0][2]))
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            _resolve_as_user(uid, gid, groups, requests, child)
            os._exit(0)
        except BaseException:
            os._exit(1)
    child.close()
    results = []
    try:
        for _, _, pin in requests:
            message, fds, _, _ = socket.recv_fds(parent, 4096, 1)
            if not message:
                raise OSError(errno.EIO, "the resolving process ended early")
            got = json.loads(message)
            error = int(got.get("error", errno.EIO))
            if fds:
                try:
                    _mount_pin(libc, fds[0], pin)
                except OSError as e:
                    error = e.errno or errno.EIO
                finally:
                    os.close(fds[0])
            results.append({"error": error, "made": bool(got.get("made"))})
    finally:
        parent.close()
        os.waitpid(pid, 0)
    os.write(out_fd, json.dumps(results).encode())


def _unbindable(libc, mounts):
    """The pins' directory a mount of its own, unbindable: a bind of a
    directory above it (`-v /run/berth/me:/x`, `-v /:/x`) copies none of
    the pins below it, so pins cannot multiply."""
    if is_mount_point(mounts):
        return
    _check(libc.mount(mounts.encode(), mounts.encode(), None, MS_BIND, None))
    _check(libc.mount(None, mounts.encode(), None, MS_UNBINDABLE, None))


def _mount_pin(libc, fd, pin):
    """Bind the open file `fd` onto `pin`, made as a directory or an empty
    file to match (a socket or a device binds onto a file too)."""
    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
    if os.path.lexists(pin):
        _unmount(libc, pin)
        _remove_mountpoint(pin)
    if is_dir:
        os.mkdir(pin, 0o700)
    else:
        os.close(os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
    _check(libc.mount(f"/proc/self/fd/{fd}".encode(), pin.encode(), None, MS_BIND | MS_REC, None))


def _unmount(libc, pin):
    while libc.umount2(pin.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0:  # stacked pins too
        pass


def _remove_mountpoint(pin):
    try:
        if os.path.isdir(pin) and not os.path.islink(pin):
            os.rmdir(pin)
        else:
            os.unlink(pin)
    except (FileNotFoundError, OSError) as e:  # busy or gone: the next sweep tries again
        if not isinstance(e, FileNotFoundError):
            log.debug("pin %s not removed: %s", pin, e)


def _unpin_child(ns_fd, pins, out_fd):
    """Every pin unmounted first, then their mountpoints removed, each on its own."""
    _close_all_but({out_fd, ns_fd})
    libc = _libc()
    if ns_fd is not None:
        _check(libc.setns(ns_fd, CLONE_NEWNS))
    for pin in pins:
        _unmount(libc, pin)
    for pin in pins:
        _remove_mountpoint(pin)
    os.write(out_fd, b"[]")


def _blank_child(ns_fd, pins, blank, out_fd):
    """Every pin unmounted and covered with a read-only blank of its kind:
    dockerd still binds it (a plain directory under the unbindable pins
    directory it could not), and finds nothing of the user's in it."""
    _close_all_but({out_fd, ns_fd})
    libc = _libc()
    _check(libc.setns(ns_fd, CLONE_NEWNS))
    for pin in pins:
        _unmount(libc, pin)
        if not os.path.lexists(pin):
            continue
        source = os.path.join(blank, "dir" if os.path.isdir(pin) else "file").encode()
        _check(libc.mount(source, pin.encode(), None, MS_BIND, None))
        _check(libc.mount(None, pin.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None))
    os.write(out_fd, b"[]")


def _in_child(target, *args):
    """Run `target(*args, out_fd)` in a forked child (single-threaded, so it
    may enter another mount namespace and change its own identity); its
    JSON answer, or OSError."""
    _libc()  # looked up before the fork
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            target(*args, w)
            os._exit(0)
        except BaseException as e:  # the child never returns into the caller
            try:
                os.write(w, json.dumps({"failed": f"{type(e).__name__}: {e}"}).encode())
            finally:
                os._exit(1)
    os.close(w)
    try:
        if not select.select([r], [], [], CHILD_TIMEOUT)[0]:
            os.kill(pid, signal.SIGKILL)  # a path on a hung file system: no pin, and no thread held for good
            os.close(r)
            r = None
            raise OSError(errno.ETIMEDOUT, f"resolving the bind sources took over {CHILD_TIMEOUT:g} s")
        data = read_and_close(r)
        r = None
    finally:
        if r is not None:
            os.close(r)
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            _reap_later(pid)
    try:
        answer = json.loads(data or b"null")
    except ValueError:
        answer = None
    if not isinstance(answer, list):
        reason = answer.get("failed") if isinstance(answer, dict) else "no answer"
        raise OSError(errno.EIO, f"the pinning process failed: {reason}")
    return answer


def _reap_later(pid):
    """Collect a child that has not exited yet (killed, or finishing) from a thread of its own."""
    import threading

    threading.Thread(target=os.waitpid, args=(pid, 0), daemon=True).start()


class Store:
    """One user's pins: records in `records` (persistent), mountpoints in
    `mounts` (under the run dir), made in the mount namespace `ns_path`
    (dockerd's; None: this process's)."""

    def __init__(self, uid, records, mounts):
        self.uid = uid
        self.records = records
        self.mounts = mounts
        self._paths = {}  # token -> the user's path: the records, read once

    def pin_path(self, token):
        return os.path.join(self.mounts, token)

    def token_of(self, source):
        """The token of a pin path of this store, else None."""
        head, _, token = str(source).rpartition("/")
        return token if head == self.mounts and TOKEN.fullmatch(token) else None

    def user_path(self, token):
        path = self._paths.get(token)
        if path is None:
            try:
                with open(os.path.join(self.records, token), "rb") as f:
                    path = self._paths[token] = f.read().decode("utf-8", "surrogateescape").rstrip("\n")
            except (FileNotFoundError, NotADirectoryError):
                return None
        return path

    def identity(self):
        import pwd

        entry = pwd.getpwuid(self.uid)
        return entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)

    def _dirs(self):
        for d in (self.records, self.mounts):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
            st = os.lstat(d)
            if st.st_uid != 0 or st.st_mode & 0o077 or not os.path.isdir(d) or os.path.islink(d):
                raise OSError(errno.EPERM, f"{d} is not root's alone")

    def pin(self, sources, tokens=None, ns_fd=None):
        """Resolve each (path, create) as the user and pin it: a Result each.
        `tokens`: re-pin under these (a start), else new ones."""
        if ns_fd is None:
            raise OSError(errno.ESRCH, "your Docker daemon is not running")
        self._dirs()
        gid, groups = self.identity()
        tokens = tokens or [secrets.token_hex(8) for _ in sources]
        requests = [(path, create, self.pin_path(token)) for (path, create), token in zip(sources, tokens)]
        for (path, _), token in zip(sources, tokens):
            _write_record(os.path.join(self.records, token), path)
            self._paths[token] = path
        answer = _in_child(_child, self.uid, gid, groups, ns_fd, requests)
        results = []
        for (path, _), token, got in zip(sources, tokens, answer):
            error = int(got.get("error", errno.EIO))
            results.append(Result(path, None if error else self.pin_path(token), error, bool(got.get("made"))))
        failed = [t for t, r in zip(tokens, results) if r.error]
        if failed:
            self.release(failed, ns_fd)
        return results

    def release(self, tokens, ns_fd=None):
        """Unmount and forget these pins."""
        tokens = [t for t in tokens if TOKEN.fullmatch(t)]
        if not tokens:
            return
        _in_child(_unpin_child, ns_fd, [self.pin_path(t) for t in tokens])
        for token in tokens:
            self._paths.pop(token, None)
            try:
                os.unlink(os.path.join(self.records, token))
            except FileNotFoundError:
                pass

    def blank(self, tokens, ns_fd=None):
        """Cover these pins with blanks, keeping their records: while a
        stopped container's are so, dockerd reaches nothing through them
        (pinning them again, as the user, undoes it)."""
        tokens = [t for t in tokens if TOKEN.fullmatch(t)]
        if not tokens:
            return
        if ns_fd is None:
            raise OSError(errno.ESRCH, "your Docker daemon is not running")
        blank = os.path.join(os.path.dirname(self.mounts), "pin-blank")
        for path, make in ((blank, os.mkdir), (os.path.join(blank, "dir"), os.mkdir),
                           (os.path.join(blank, "file"), lambda p, mode: os.close(os.open(
                               p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)))):
            try:
                make(path, 0o755 if make is os.mkdir else 0o444)
            except FileExistsError:
                pass
            st = os.lstat(path)
            if st.st_uid != 0 or st.st_mode & 0o022 or os.path.islink(path):
                raise OSError(errno.EPERM, f"{path} is not root's alone")
        _in_child(_blank_child, ns_fd, [self.pin_path(t) for t in tokens], blank)

    def tokens(self):
        try:
            return [t for t in os.listdir(self.records) if TOKEN.fullmatch(t)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def display(self, body):
        """dockerd's JSON answer with every pin path given as the user's
        path, as Go would have encoded it."""
        prefix = (self.mounts + "/").encode()
        if prefix not in body:
            return body
        def swap(m):
            token = m.group(1).decode()
            path = self.user_path(token)
            return m.group(0) if path is None else b'"' + go_json_string(path) + b'"'
        return re.sub(b'"' + re.escape(prefix) + rb'([0-9a-f]{16})"', swap, body)


def unpin_all(mounts, ns_path=None):
    """Unmount every pin below `mounts` (in the namespace held at `ns_path`):
    before a purge deletes the directory."""
    try:
        names = [n for n in os.listdir(mounts) if TOKEN.fullmatch(n)]
    except (FileNotFoundError, NotADirectoryError):
        return
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC) if ns_path else None
    try:
        _in_child(_unpin_child, fd, [os.path.join(mounts, n) for n in names])
    finally:
        if fd is not None:
            os.close(fd)


def go_json_string(text):
    """The inside of a JSON string as Go's encoding/json writes it (HTML
    characters and the line separators escaped)."""
    inner = json.dumps(text, ensure_ascii=False)[1:-1]
    for ch, esc in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        inner = inner.replace(ch, esc)
    return inner.encode("utf-8", "surrogateescape")


def _write_record(path, user_path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, user_path.encode("utf-8", "surrogateescape") + b"\n")
    finally:
        os.close(fd)


def mount_namespace_of(pid):
    """An open descriptor of `pid`'s mount namespace (the caller closes it)."""
    return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
