"""`berth logs USER [-f] [-n N]`: a user's dockerd log, as `docker logs` shows one."""

import os
import time

from berth.core.errors import BerthError


def show(path, user, lines, follow_too, out):
    """Print the log (all of it, or its last `lines`), then what is appended if `follow_too`."""
    try:
        if lines is None:
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = b"".join(last_lines(path, lines))
    except FileNotFoundError:
        raise BerthError(f"{user} has no dockerd log yet ({path})",
                         hint=f"it appears with their first daemon: berth up {user}") from None
    except PermissionError as e:
        raise BerthError(f"cannot read {path}", hint="dockerd logs are root's: sudo berth logs ...") from e
    sink = getattr(out, "buffer", None)
    write = sink.write if sink else (lambda b: out.write(b.decode(errors="replace")))
    write(data)
    out.flush()
    if follow_too:
        try:
            follow(path, lambda b: (write(b), out.flush()))
        except KeyboardInterrupt:
            pass


def last_lines(path, n, chunk=65536):
    """The last `n` lines of a file, read from the end (logs grow large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= n:
            start = max(0, end - chunk)
            f.seek(start)
            data = f.read(end - start) + data
            end = start
    lines = data.splitlines(keepends=True)
    return lines[-n:] if n else []


def follow(path, write, poll=0.2, stop=lambda: False, start_at_end=True):
    """Write what is appended to `path` until `stop()`; copes with truncation."""
    f = open(path, "rb")
    try:
        if start_at_end:
            f.seek(0, os.SEEK_END)
        while not stop():
            data = f.read()
            if data:
                write(data)
                continue
            try:
                if os.stat(path).st_size < f.tell():  # truncated or replaced: start over
                    f.close()
                    f = open(path, "rb")
            except FileNotFoundError:
                pass
            time.sleep(poll)
    finally:
        f.close()
