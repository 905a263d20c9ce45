"""The client's side of a proxied connection: its requests parsed by llhttp
(httptools), as heads, body data and ends, read as needed.

h11 parses in Python, about 35 µs for each 32 KiB chunk the docker CLI
sends, which held a `docker cp` to half its speed; llhttp parses in C. The
proxy still answers through h11 (it feeds h11 each request's head, with
no body) and still re-frames every body it forwards: it never passes on
the client's own framing, so no parser difference between llhttp and
dockerd's can carry a second request past the policy.
"""

import collections

import httptools

Head = collections.namedtuple("Head", "method target headers version")


class BadRequest(Exception):
    """Not HTTP/1.1 as llhttp reads it."""


class Requests:
    """Events of one client connection: Head, bytes (body data), END, or
    None at the end of the connection. After an upgrade request (attach,
    exec start) the bytes the client sent beyond it are in `rest`."""

    END = "end"

    def __init__(self, reader, chunk):
        self.reader = reader
        self.chunk = chunk
        self.parser = httptools.HttpRequestParser(self)
        self.events = collections.deque()
        self.rest = None
        self._url, self._headers = b"", []
        self._upgrade_body_left = 0  # of an upgrade request's body, still to be read

    # --- llhttp's callbacks ------------------------------------------------------

    def on_message_begin(self):
        self._url, self._headers = b"", []

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        self._headers.append((name, value))

    def on_headers_complete(self):
        self.events.append(Head(self.parser.get_method(), self._url, self._headers,
                                self.parser.get_http_version()))

    def on_body(self, body):
        self.events.append(bytes(body))

    def on_message_complete(self):
        self.events.append(self.END)

    # --- reading ---------------------------------------------------------------------

    async def next(self):
        """The next event; body data already parsed is joined into one."""
        while not self.events:
            if self.rest is not None and not self._upgrade_body_left:
                return None  # upgraded: no more HTTP on this connection
            data = await self.reader.read(self.chunk)
            if not data:
                return None
            if self._upgrade_body_left:
                self._upgrade_body(data)
                continue
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as e:
                self._upgraded(data[e.args[0]:])
            except httptools.HttpParserError as e:
                raise BadRequest(str(e)) from None
        event = self.events.popleft()
        if isinstance(event, bytes) and self.events and isinstance(self.events[0], bytes):
            parts = [event]
            while self.events and isinstance(self.events[0], bytes):
                parts.append(self.events.popleft())
            event = b"".join(parts)
        return event


    def _upgraded(self, after_head):
        """llhttp stops at the head of an upgrade request (exec start, attach)
        and calls it complete; dockerd reads its body (Content-Length) first,
        and so does this: the body, then its end, then the raw stream."""
        head = next(e for e in reversed(self.events) if isinstance(e, Head))
        if self.events and self.events[-1] is self.END:
            self.events.pop()
        if any(name.lower() == b"transfer-encoding" for name, _ in head.headers):
            raise BadRequest("an upgrade request with a chunked body")
        self._upgrade_body_left = content_length(head)
        self.rest = b""
        self._upgrade_body(after_head)
        if not self._upgrade_body_left and (not self.events or self.events[-1] is not self.END):
            self.events.append(self.END)

    def _upgrade_body(self, data):
        take = data[:self._upgrade_body_left]
        self._upgrade_body_left -= len(take)
        self.rest += data[len(take):]
        if take:
            self.events.append(take)
        if not self._upgrade_body_left:
            self.events.append(self.END)


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
