"""A request body moved from the client's socket to dockerd's inside the
kernel: splice(2) into a pipe, and from the pipe on, driven by the event
loop. The bytes are never copied into the proxy, so an upload (`docker cp`,
`docker load`, a build context) costs it a wakeup and two system calls per
read, not two copies of every byte: on a 2-core box those copies took turns
with the docker CLI and dockerd's untar, and held `docker cp` to about 0.8x
of direct.

Only a body the policy does not read is relayed so, on a connection to
dockerd that carries that one request (`Connection: close`): what dockerd
makes of its framing cannot become a second request.
"""

import fcntl
import os

F_SETPIPE_SZ = 1031  # fcntl's number on Linux; Python names it from 3.10 on some builds only
PIPE_SIZE = 1 << 20  # room for what the CLI has in flight, and then some: one splice a wakeup
FLAGS = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


class Relay:
    """Moves bytes from `src` (a socket fd) to `dst` (a socket fd) until the
    client's end, reading only when all that was read is taken. The
    descriptors are duplicated: their transports keep their own, and go on
    with the other direction (dockerd's answer). `ended(error)` is called
    once: None at the client's end of sending, an OSError if either side
    failed."""

    def __init__(self, loop, src, dst, ended):
        self._loop = loop
        self._ended = ended
        self._src = self._dst = self._pr = self._pw = None
        try:
            self._src, self._dst = os.dup(src), os.dup(dst)
            self._pr, self._pw = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self.close()
            raise
        try:
            fcntl.fcntl(self._pw, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # past the box's pipe-max-size: a smaller pipe works, with more wakeups
        self._in_pipe = 0
        self._running = True
        loop.add_reader(self._src, self._readable)

    def _readable(self):
        try:
            n = os.splice(self._src, self._pw, PIPE_SIZE, flags=FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._end(e)
            return
        if n == 0:
            self._end(None)
            return
        self._in_pipe += n
        self._flush()

    def _flush(self):
        """Pass on what is in the pipe; if dockerd has not taken it all, stop
        reading the client until it has (the kernel then holds the client)."""
        while self._in_pipe:
            try:
                self._in_pipe -= os.splice(self._pr, self._dst, self._in_pipe, flags=FLAGS)
            except (BlockingIOError, InterruptedError):
                self._loop.remove_reader(self._src)
                self._loop.add_writer(self._dst, self._writable)
                return False
            except OSError as e:
                self._end(e)
                return False
        return True

    def _writable(self):
        if self._flush() and self._running:
            self._loop.remove_writer(self._dst)
            self._loop.add_reader(self._src, self._readable)

    def _end(self, error):
        if self._running:
            self._running = False
            self._stop_watching()
            self._ended(error)

    def _stop_watching(self):
        if self._src is not None:
            self._loop.remove_reader(self._src)
        if self._dst is not None:
            self._loop.remove_writer(self._dst)

    def close(self):
        """Stop (dockerd has answered, or the proxy is done) and let go of
        the descriptors; what is still in the pipe is dropped."""
        self._running = False
        self._stop_watching()
        for fd in (self._src, self._dst, self._pr, self._pw):
            if fd is not None:
                os.close(fd)
        self._src = self._dst = self._pr = self._pw = None
