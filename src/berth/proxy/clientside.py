"""The client's side of a proxied connection: an asyncio buffered protocol
whose requests are parsed by llhttp (httptools), as heads, body data and
ends, and which is also the writer the proxy answers through.

Why not asyncio streams and h11: a `docker cp` or `docker load` of 500 MiB
went through four copies in Python (the transport's read, the stream's
buffer, its read, h11's join) and h11's parsing in Python, about 35 µs for
each 32 KiB chunk the docker CLI sends. Here the kernel reads into one
reused buffer, llhttp parses in C and hands over each body piece once, and
the pieces go on without being joined.

Each head is fed to llhttp on its own, and what follows it waits until
the proxy has read the head and says how its body is taken: parsed (JSON
the policy reads, a refused body dropped), or relayed as it came, unparsed
(`relay_body`: image loads, build contexts, `docker cp`), spliced from this
socket to dockerd's in the kernel (splicerelay.py).

The proxy answers through h11 (it feeds h11 each request's head, with no
body).
"""

import asyncio
import collections
import select

import httptools

# `upgrade`: llhttp's own verdict (an Upgrade header and a Connection: upgrade token)
Head = collections.namedtuple("Head", "method target headers version upgrade", defaults=(False,))

READ_BUFFER = 256 * 1024
# The kernel reads every connection's bytes into this one buffer: asyncio and
# uvloop call get_buffer, read, then buffer_updated, with nothing between,
# and buffer_updated leaves nothing in it (llhttp hands over copies). One
# buffer, not one for each of up to thousands of connections, and no
# allocation for each read.
_SHARED_BYTES = bytearray(READ_BUFFER)
_SHARED = memoryview(_SHARED_BYTES)
# llhttp takes CRLF line ends only (a test holds it to that), so a head ends
# at the first blank line: what comes after it is the body, or the next request.
HEAD_END = b"\r\n\r\n"
# Body data parsed but not yet taken by the proxy: past HIGH the client is
# no longer read until the proxy (that is, dockerd) has caught up to LOW.
HIGH, LOW = 2 << 20, 512 << 10
MAX_EVENTS = 1024  # and past this many parsed events (pipelined heads, say)
# What a body piece costs beyond its bytes (a bytes object, a list slot):
# counted, so a body of 2-byte chunks is held to HIGH like any other.
PIECE_OVERHEAD = 64
MAX_HEAD = 64 << 10  # a request head past this is refused (h11's own cap, which the old proxy had)
# Empty lines before a request line: RFC 9112 asks servers to ignore "at
# least one"; the docker CLI sends none. More is a client feeding the
# proxy 4-byte heads, each a pass through the parser.
MAX_BLANK = 4


class BadRequest(Exception):
    """Not HTTP/1.1 as llhttp reads it."""


class Client(asyncio.BufferedProtocol):
    """One client connection. `next()` gives its events: a Head, a list of
    bytes (body data, in the pieces it came in), END, or None at the end of
    the connection. After an upgrade request (attach, exec start) the bytes
    the client sends are read raw with `read_raw()`.

    It writes like an asyncio StreamWriter (write, writelines, drain,
    write_eof, close). `serve` is called with it once it is connected.
    """

    END = "end"

    def __init__(self, serve):
        self._serve = serve
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.events = collections.deque()
        self.upgraded = False
        self.raw = collections.deque()  # bytes after an upgrade request, in order
        self._url, self._headers, self._head_size = [], [], 0
        self._upgrade_body_left = 0  # of an upgrade request's body, still to be read
        self._queued = 0  # bytes of body data in `events`
        self._paused = False
        self._eof = False
        self._error = None
        # Between bodies a read is fed to llhttp only up to the end of a head
        # (`_tail`: the last bytes of a head cut by a read); what follows the
        # head is `_held` ((bytes, start, end) pieces, never copied again)
        # until the proxy takes the next event or relays the body.
        self._between = True
        self._in_head = False
        self._blank = 0
        self._tail = b""
        self._head_fed = False
        self._held = None
        self._relayed = False  # the rest of the connection goes to dockerd past this protocol
        self._waiter = None
        self._on_end = None
        self._hangup = None
        self._gone = False
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.task = None

    # --- asyncio's callbacks ---------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self._watch_hangup()
        self.task = asyncio.ensure_future(self._serve(self))

    def _watch_hangup(self):
        """Notice the client closing its socket even while it is not read
        (bytes held back, a body relayed, an answer pending): an epoll of
        this socket alone, with no events asked for, wakes only at a hangup."""
        sock = self.transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return
        watcher = select.epoll()
        try:
            watcher.register(sock.fileno(), 0)
            asyncio.get_running_loop().add_reader(watcher.fileno(), self._hung_up)
        except (OSError, RuntimeError):
            watcher.close()
            return
        self._hangup = watcher

    def _unwatch_hangup(self):
        if self._hangup is not None:
            asyncio.get_running_loop().remove_reader(self._hangup.fileno())
            self._hangup.close()
            self._hangup = None

    def _hung_up(self):
        self._unwatch_hangup()
        self._eof = self._gone = True
        self._ended()
        self._wake()

    def get_buffer(self, sizehint):
        return _SHARED

    def buffer_updated(self, nbytes):
        if self._error is not None:
            return  # refused: nothing more of this connection is parsed (reading is paused)
        self._process(_SHARED_BYTES, 0, nbytes)
        if (self._queued > HIGH or len(self.events) > MAX_EVENTS) and not self._paused:
            self._pause()
        self._wake()

    def _process(self, buf, pos, end):
        """Parse buf[pos:end] (the shared buffer, or held bytes): heads on
        their own, what follows a head held back."""
        view = memoryview(buf)
        while pos < end and self._error is None:
            if self.upgraded:
                self._after_upgrade(bytes(view[pos:end]))
                return
            if self._held is not None:
                if buf is _SHARED_BYTES:  # the next read overwrites it
                    buf, pos, end = bytes(view[pos:end]), 0, end - pos
                self._held.append((buf, pos, end))
                self._pause()
                return
            if self._between and not self._in_head and not self._blank_lines(view, pos, end):
                return
            stop = self._head_end(buf, pos, end) if self._between else end
            self._head_fed = self._between
            try:
                self.parser.feed_data(view[pos:stop])
            except httptools.HttpParserUpgrade as e:
                self._upgraded(bytes(view[pos + e.args[0]:stop]))
            except (BadRequest, httptools.HttpParserCallbackError) as e:
                # raised in a callback (a head too big); httptools wraps it, or passes it on
                cause = e if isinstance(e, BadRequest) else e.__context__ or e.__cause__
                self._refused(cause if isinstance(cause, BadRequest) else BadRequest(str(e)))
            except httptools.HttpParserError as e:
                self._refused(BadRequest(str(e)))
            finally:
                self._head_fed = False
            pos = stop

    def _blank_lines(self, view, pos, end):
        """Count the empty lines before a request line; False (refused) past MAX_BLANK bytes."""
        lead = bytes(view[pos:min(end, pos + MAX_BLANK + 1)])
        self._blank += len(lead) - len(lead.lstrip(b"\r\n"))
        if self._blank > MAX_BLANK:
            self._refused(BadRequest("empty lines before a request line"))
            return False
        return True

    def _refused(self, error):
        """Nothing more of this connection is read. A head llhttp queued
        before it found the request bad (its framing is checked after the
        head's callback) goes too: the proxy answers 400, and never sends
        such a head on."""
        self._error = error
        if self.events and isinstance(self.events[-1], Head):
            self.events.pop()
        self._held = None
        self._pause()

    def _head_end(self, buf, start, end):
        """Where in buf[start:end] the head being read ends (past its blank
        line), or `end`, remembering the last bytes for the next read."""
        if self._tail:
            across = (self._tail + bytes(buf[start:min(start + 3, end)])).find(HEAD_END)
            if across >= 0:
                found, self._tail = start + across + len(HEAD_END) - len(self._tail), b""
                return found
        found = buf.find(HEAD_END, start, end)
        if found >= 0:
            self._tail = b""
            return found + len(HEAD_END)
        self._tail = (self._tail + bytes(buf[max(start, end - 3):end]))[-3:]
        return end

    def eof_received(self):
        self._eof = True
        self._ended()
        self._wake()
        return True  # half-closed: answers (and an exec's output) may still go out

    def connection_lost(self, exc):
        self._unwatch_hangup()
        self._eof = self._gone = True
        self._ended()
        self._can_write.set()
        self._wake()

    def pause_writing(self):
        self._can_write.clear()

    def resume_writing(self):
        self._can_write.set()

    # --- llhttp's callbacks ------------------------------------------------------------

    def on_message_begin(self):
        self._url, self._headers, self._head_size = [], [], 0
        self._in_head, self._blank = True, 0

    def _head_grew(self, size):
        self._head_size += size
        if self._head_size > MAX_HEAD:
            raise BadRequest(f"a request head over {MAX_HEAD // 1024} KiB")

    def on_url(self, url):
        self._head_grew(len(url))
        self._url.append(url)

    def on_header(self, name, value):
        self._head_grew(len(name) + len(value) + PIECE_OVERHEAD)
        self._headers.append((name, value))

    def on_headers_complete(self):
        upgrade = self.parser.should_upgrade()
        self.events.append(Head(self.parser.get_method(), b"".join(self._url), self._headers,
                                self.parser.get_http_version(), upgrade))
        self._between = self._in_head = False
        if self._head_fed and not upgrade:
            self._held = []  # llhttp stopped at the head's end: the rest waits for the proxy

    def on_body(self, body):
        self._queued += len(body) + PIECE_OVERHEAD
        if self.events and isinstance(self.events[-1], list):
            self.events[-1].append(body)
        else:
            self.events.append([body])

    def on_message_complete(self):
        self.events.append(self.END)
        self._between = True

    # --- the client's end, while an answer is pending -----------------------------------

    def on_end(self, callback):
        """Until `on_end(None)`, call `callback` when the client ends its
        side, and again when it is gone altogether: at once if it already
        has. Not after an upgrade, where the end is passed on with the raw
        stream."""
        self._on_end = callback
        if callback is not None and self._eof:
            self._ended()

    def gone(self):
        """Whether the client has closed its socket altogether, not only its
        sending side (POLLHUP: both directions shut)."""
        if self._gone:
            return True
        sock = self.transport.get_extra_info("socket") if not self.transport.is_closing() else None
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return True
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poll.poll(0))

    def _ended(self):
        if self._on_end is not None and not self.upgraded:
            self._on_end()

    # --- reading -------------------------------------------------------------------------

    def _wake(self):
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self):
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _pause(self):
        self._paused = True
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def _taken(self, size):
        self._queued -= size
        if self._paused and self._error is None and self._held is None and not self._relayed \
                and self._queued <= LOW and len(self.events) <= MAX_EVENTS // 2 and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()

    async def next(self):
        """The next event (see the class)."""
        while not self.events:
            if self._held is not None:
                self._release()
                continue
            if self._error is not None:
                raise self._error
            if self._eof or (self.upgraded and not self._upgrade_body_left):
                return None  # upgraded: no more HTTP on this connection
            await self._wait()
        event = self.events.popleft()
        self._taken(sum(len(piece) + PIECE_OVERHEAD for piece in event) if isinstance(event, list) else 0)
        return event

    def _release(self):
        """The proxy wants the body parsed: what was held back is parsed now."""
        pieces, self._held = self._held, None
        if len(pieces) == 1:
            self._process(*pieces[0])
        elif pieces:
            held = _joined(pieces)
            self._process(held, 0, len(held))
        self._taken(0)

    # --- a body relayed unparsed -------------------------------------------------------

    def relay_body(self):
        """The bytes read past this request's head, after which the client's
        socket is no longer read here: the rest of the connection goes to
        dockerd unparsed (splicerelay), and it carries no further request.
        None if llhttp has read on past the head (a request pipelined behind
        a body): its body then comes as events."""
        if self._held is None or self.events or self._error is not None:
            return None
        held, self._held = _joined(self._held), None
        self._relayed = True
        self._pause()
        return held

    async def read_raw(self):
        """After an upgrade: the next bytes the client sent, b"" at its end."""
        while not self.raw:
            if self._eof:
                return b""
            await self._wait()
        data = self.raw.popleft()
        self._taken(len(data))
        return data

    def _upgraded(self, after_head):
        """llhttp stops at the head of an upgrade request (exec start, attach)
        and calls it complete; dockerd reads its body (Content-Length) first,
        and so does this: the body, then its end, then the raw stream."""
        head = next(e for e in reversed(self.events) if isinstance(e, Head))
        if self.events and self.events[-1] is self.END:
            self.events.pop()
        if any(name.lower() == b"transfer-encoding" for name, _ in head.headers):
            self._refused(BadRequest("an upgrade request with a chunked body"))
            return
        self.upgraded = True
        self._upgrade_body_left = content_length(head)
        self._after_upgrade(after_head)
        if not self._upgrade_body_left and self.events[-1] is not self.END:
            self.events.append(self.END)

    def detach_raw(self):
        """After an upgrade whose body is read: the bytes the client sent
        that were not read yet, after which its socket is no longer read
        here (the rest goes to dockerd past this protocol). None while the
        request's body is still being read."""
        if not self.upgraded or self._upgrade_body_left or self._error is not None:
            return None
        rest = b"".join(self.raw)
        self.raw.clear()
        self._queued = 0
        self._relayed = True
        self._pause()
        return rest

    def take_raw(self):
        """dockerd switched protocols (101) for a request llhttp did not read
        as an upgrade (an `Upgrade:` header without `Connection: upgrade`):
        from now on the client's bytes are raw, as dockerd reads them."""
        if not self.upgraded:
            self.upgraded = True
            self.events.clear()
            if self._held is not None:
                held, self._held = _joined(self._held), None
                if held:
                    self._queued += len(held)
                    self.raw.append(held)
                self._taken(0)

    def _after_upgrade(self, data):
        if self._upgrade_body_left:
            take = data[:self._upgrade_body_left]
            self._upgrade_body_left -= len(take)
            data = data[len(take):]
            if take:
                self.on_body(take)
            if not self._upgrade_body_left:
                self.events.append(self.END)
        if data:
            self._queued += len(data)
            self.raw.append(data)

    # --- writing, as an asyncio StreamWriter does ---------------------------------------

    def write(self, data):
        self.transport.write(data)

    def writelines(self, pieces):
        self.transport.writelines(pieces)

    async def drain(self):
        if self.transport.is_closing():
            # As StreamWriter.drain: yield, so a writer to a client that went away stops.
            await asyncio.sleep(0)
            raise ConnectionResetError("the client went away")
        await self._can_write.wait()

    def can_write_eof(self):
        return self.transport.can_write_eof()

    def write_eof(self):
        self.transport.write_eof()

    def get_extra_info(self, name, default=None):
        return self.transport.get_extra_info(name, default)

    def close(self):
        self.transport.close()


def _joined(pieces):
    return b"".join(memoryview(buf)[start:end] for buf, start, end in pieces)


def content_length(head):
    for name, value in head.headers:
        if name.lower() == b"content-length":
            return int(value)
    return 0


def has_body(head):
    """Whether the request carries a body, by its framing headers (which
    llhttp has checked: not both, and a chunked one last)."""
    for name, value in head.headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def bodiless_head(head):
    """The request's head as h11 is fed it: the same, but no body (the
    proxy reads bodies itself), so h11 answers it as it would the real one."""
    lines = [b"%s %s HTTP/%s" % (head.method, head.target, head.version.encode())]
    lines += [name + b": " + value for name, value in head.headers
              if name.lower() not in (b"content-length", b"transfer-encoding")]
    return b"\r\n".join(lines) + b"\r\nContent-Length: 0\r\n\r\n"
