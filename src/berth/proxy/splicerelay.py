"""A request body moved from the client's socket to dockerd's inside the
kernel: splice(2) into a pipe, and from the pipe on. The bytes are never
copied into the proxy, so an upload (`docker cp`, `docker load`, a build
context) costs it two system calls per read, not two copies of every
byte, which on a small box took turns with the docker CLI and dockerd's
untar.

Each relay runs in a thread of its own, blocked in poll(2) between reads
(driven by the event loop, each of the CLI's 32 KiB writes costs a
wakeup, a callback and an epoll round). A thread can also wait: a read of
less than COALESCE waits NAP for the CLI's next writes, so the proxy and
dockerd wake once for several of them. Each thread takes the
interpreter's lock at its wakeups, which delays the loop, so past
MAX_THREADS relays at once the loop drives them. What each choice
measured: docs/performance.md.

Each relay's pipe may hold up to 1 MiB of kernel memory while dockerd is
slow to take it.

Only a body the policy does not read is relayed so, on a connection to
dockerd that carries that one request (`Connection: close`): what dockerd
makes of its framing cannot become a second request.
"""

import fcntl
import os
import select
import threading
import time

F_SETPIPE_SZ = 1031  # fcntl's number on Linux; Python names it from 3.10 on some builds only
PIPE_SIZE = 1 << 20  # room for what the CLI has in flight, and then some: one splice a wakeup
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
MAX_THREADS = 8  # relays in threads at once, host-wide; the loop drives any more
COALESCE = 128 << 10  # a read smaller than this waits NAP seconds for more
NAP = 0.0001


class DockerdGone(OSError):
    """dockerd's side of a relay failed (it closed, having answered): its
    answer may still be there to read."""


def Relay(loop, src, dst, ended, thread=True):
    """Move bytes from `src` to `dst` (socket fds, non-blocking) until the
    client's end, reading only when all that was read is taken. The
    descriptors are duplicated: their transports keep their own, and go on
    with the other direction (dockerd's answer). `ended(error)` is called
    once, in the loop: None at the client's end of sending, DockerdGone if
    dockerd's side failed, another OSError if the client's did. `close()`
    stops it; `ended` is not called after. Its descriptors must be
    non-blocking (the kernel's SPLICE_F_NONBLOCK is the pipe's only).
    `thread`: False for the loop's, whatever threads are free."""
    if thread and ThreadRelay.running < MAX_THREADS:
        try:
            return ThreadRelay(loop, src, dst, ended)
        except RuntimeError:
            pass  # no thread to be had: the loop drives it
    return LoopRelay(loop, src, dst, ended)


class _Pipe:
    """The duplicated descriptors and the pipe between them."""

    def __init__(self, src, dst):
        self.fds = []
        try:
            self.src = self._keep(os.dup(src))
            self.dst = self._keep(os.dup(dst))
            self.read_end, self.write_end = (self._keep(fd) for fd in os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError:
            self.close()
            raise
        try:
            fcntl.fcntl(self.write_end, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # past the box's pipe-max-size: a smaller pipe works, with more wakeups

    def _keep(self, fd):
        self.fds.append(fd)
        return fd

    def take(self):
        """Read what the client sent into the pipe: a count, 0 at its end;
        BlockingIOError when nothing is there yet."""
        return os.splice(self.src, self.write_end, PIPE_SIZE, flags=FLAGS)

    def give(self, size):
        """Pass on up to `size` bytes of the pipe; BlockingIOError when dockerd
        takes none, DockerdGone when it is gone."""
        try:
            return os.splice(self.read_end, self.dst, size, flags=FLAGS)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as e:
            raise DockerdGone(e.errno, e.strerror) from e

    def close(self):
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


class ThreadRelay:
    running = 0  # threads alive, host-wide
    _count = threading.Lock()

    def __init__(self, loop, src, dst, ended):
        self._loop = loop
        self._ended = ended
        self._pipe = _Pipe(src, dst)
        self._wake = None
        # The thread owns the descriptors and closes them: closing one under
        # it could hand its number, mid-splice, to another connection.
        self._lock = threading.Lock()
        self._stopped = self._exited = False
        try:
            self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            with ThreadRelay._count:
                ThreadRelay.running += 1
            threading.Thread(target=self._run, name="berth-relay", daemon=True).start()
        except (OSError, RuntimeError) as e:
            self._exit()
            raise RuntimeError(f"no thread for a relay: {e}") from e

    def _run(self):
        error = None
        try:
            self._move()
        except OSError as e:
            error = e
        except Exception as e:  # never a thread gone quiet: dockerd would wait for the rest
            error = OSError(f"the relay failed: {e!r}")
        finally:
            stopped = self._exit()
        if not stopped:
            try:
                self._loop.call_soon_threadsafe(self._report, error)
            except RuntimeError:
                pass  # the loop is gone: the proxy is stopping

    def _move(self):
        readable, writable = select.poll(), select.poll()
        readable.register(self._pipe.src, select.POLLIN)
        writable.register(self._pipe.dst, select.POLLOUT)
        for poll in (readable, writable):
            poll.register(self._wake, select.POLLIN)
        while not self._stopped:
            try:
                size = self._pipe.take()
            except (BlockingIOError, InterruptedError):
                readable.poll()
                continue
            if not size:
                return  # the client's end of sending
            if size < COALESCE:
                time.sleep(NAP)
                try:
                    size += self._pipe.take()
                except (BlockingIOError, InterruptedError):
                    pass  # nothing more meanwhile (or the client's end, seen at the next read)
            while size and not self._stopped:
                try:
                    size -= self._pipe.give(size)
                except (BlockingIOError, InterruptedError):
                    writable.poll()  # dockerd has not taken it: the client waits in the kernel meanwhile

    def _exit(self):
        """Close everything, once; whether the relay was stopped from outside."""
        with self._lock:
            if not self._exited:
                self._exited = True
                self._pipe.close()
                if self._wake is not None:
                    with ThreadRelay._count:
                        ThreadRelay.running -= 1
                    try:
                        os.close(self._wake)
                    except OSError:
                        pass
            return self._stopped

    def _report(self, error):
        if not self._stopped:
            self._stopped = True
            self._ended(error)

    def close(self):
        with self._lock:
            self._stopped = True
            if not self._exited:
                os.eventfd_write(self._wake, 1)


class LoopRelay:
    """The same, driven by the event loop: a reader on the client's socket,
    a writer on dockerd's while it has not taken what was read."""

    def __init__(self, loop, src, dst, ended):
        self._loop = loop
        self._ended = ended
        self._pipe = _Pipe(src, dst)
        self._in_pipe = 0
        self._running = True
        try:
            loop.add_reader(self._pipe.src, self._readable)
        except BaseException:
            self._pipe.close()
            raise

    def _readable(self):
        try:
            size = self._pipe.take()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._end(e)
            return
        if not size:
            self._end(None)
            return
        self._in_pipe += size
        self._flush()

    def _flush(self):
        """Pass on what is in the pipe; if dockerd has not taken it all, stop
        reading the client until it has (the kernel then holds the client)."""
        while self._in_pipe:
            try:
                self._in_pipe -= self._pipe.give(self._in_pipe)
            except (BlockingIOError, InterruptedError):
                self._loop.remove_reader(self._pipe.src)
                self._loop.add_writer(self._pipe.dst, self._writable)
                return False
            except OSError as e:
                self._end(e)
                return False
        return True

    def _writable(self):
        if self._flush() and self._running:
            self._loop.remove_writer(self._pipe.dst)
            self._loop.add_reader(self._pipe.src, self._readable)

    def _end(self, error):
        if self._running:
            self._running = False
            self._stop_watching()
            self._ended(error)

    def _stop_watching(self):
        if self._pipe.fds:
            self._loop.remove_reader(self._pipe.src)
            self._loop.remove_writer(self._pipe.dst)

    def close(self):
        """Stop and let go of the descriptors; what is still in the pipe is dropped."""
        self._running = False
        self._stop_watching()
        self._pipe.close()
