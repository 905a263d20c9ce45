"""containercopy's answers, shaped as dockerd's, on a plain directory (no namespaces entered)."""

import base64
import io
import json
import os
import socket
import tarfile

import pytest

from berth.proxy import containercopy as cc


@pytest.mark.parametrize("given, absolute, base", [
    ("/data/sub", "/data/sub", "sub"), ("data/sub/", "/data/sub/", "sub"), ("/data/sub/.", "/data/sub/.", "."),
    ("/data/../etc", "/etc", "etc"), ("/", "/", "/"), ("//x//y", "/x/y", "y"),
])
def test_paths_as_dockerd_reads_them(given, absolute, base):
    assert cc.absolute(given) == absolute
    assert cc.base(absolute) == base


def test_go_modes_and_times():
    assert cc.go_mode(0o40755) == (1 << 31) | 0o755
    assert cc.go_mode(0o120777) == (1 << 27) | 0o777
    assert cc.go_mode(0o104755) == (1 << 23) | 0o755
    assert cc.go_time(1_000_000_000_500_000_000) == "2001-09-09T01:46:40.5Z"
    assert cc.go_time(0) == "1970-01-01T00:00:00Z"


@pytest.fixture
def tree(tmp_path, monkeypatch):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "f.txt").write_text("f\n")
    (tmp_path / "d" / "e" / "g.txt").write_text("g\n")
    (tmp_path / "link").symlink_to("d/f.txt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _served(request, body=b""):
    parent, child = socket.socketpair()
    parent.sendall(body)
    parent.shutdown(socket.SHUT_WR)
    cc.serve(child, request)
    child.close()
    data = b""
    while chunk := parent.recv(1 << 16):
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def test_stat_and_archive_named_as_dockerd_names_them(tree):
    answer, rest = _served({"op": "get", "path": f"{tree}/d", "name": "c"})
    assert answer["status"] == 200 and answer["stat"]["name"] == "d" and answer["stat"]["mode"] & (1 << 31)
    with tarfile.open(fileobj=io.BytesIO(rest)) as t:
        assert sorted(t.getnames()) == ["d", "d/e", "d/e/g.txt", "d/f.txt"]
    answer, rest = _served({"op": "get", "path": f"{tree}/d/.", "name": "c"})
    with tarfile.open(fileobj=io.BytesIO(rest)) as t:
        assert "./f.txt" in t.getnames()
    answer, _ = _served({"op": "stat", "path": f"{tree}/link", "name": "c"})
    assert answer["stat"]["linkTarget"] == f"{tree}/d/f.txt" and answer["stat"]["mode"] & (1 << 27)
    header = json.loads(base64.b64decode(cc.stat_header(answer["stat"])))
    assert header == answer["stat"]


def test_missing_paths_get_dockerds_404(tree):
    answer, rest = _served({"op": "get", "path": f"{tree}/absent", "name": "web"})
    assert answer == {"status": 404, "message": f"Could not find the file {tree}/absent in container web"}
    assert rest == b""


def _tar(*members):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_extract_into_a_directory(tree):
    body = _tar(("new/x.txt", b"x\n", "file"), ("d/f.txt", b"replaced\n", "file"))
    answer, _ = _served({"op": "put", "path": f"{tree}", "name": "c"}, body)
    assert answer == {"status": 200}
    assert (tree / "new" / "x.txt").read_text() == "x\n" and (tree / "d" / "f.txt").read_text() == "replaced\n"


@pytest.mark.parametrize("members, words", [
    ((("../out.txt", b"x", "file"),), "is outside of"),
    ((("s", "../../etc/passwd", "sym"),), "invalid symlink"),
    ((("null", "", "chr"),), "device node"),
])
def test_extract_refuses_breakouts_and_devices(tree, members, words):
    answer, _ = _served({"op": "put", "path": f"{tree}/d", "name": "c"}, _tar(*members))
    assert answer["status"] == 500 and words in answer["message"]
    assert not (tree / "out.txt").exists()


def test_extract_checks_the_extraction_point_and_overwrites(tree):
    answer, _ = _served({"op": "put", "path": f"{tree}/d/f.txt", "name": "c"}, _tar(("y", b"y", "file")))
    assert answer == {"status": 500, "message": "extraction point is not a directory"}
    answer, _ = _served({"op": "put", "path": f"{tree}", "name": "c", "no_overwrite": True},
                        _tar(("d", b"not a dir", "file")))
    assert answer["status"] == 500 and "cannot overwrite directory" in answer["message"]
    answer, _ = _served({"op": "put", "path": f"{tree}/d", "name": "c", "mounts": [(f"{tree}/d", False)]},
                        _tar(("y", b"y", "file")))
    assert answer == {"status": 500, "message": "mounted volume is marked read-only"}
    answer, _ = _served({"op": "put", "path": f"{tree}/d", "name": "c", "readonly_rootfs": True},
                        _tar(("y", b"y", "file")))
    assert answer == {"status": 500, "message": "container rootfs is marked read-only"}
    assert not os.path.exists(tree / "d" / "y")


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_the_copy_childs_socket_is_closed_by_the_relay_not_left_to_the_collector(loop_name):
    """Left to the garbage collector, the socket object's finalizer could
    close the descriptor before the loop's handle did, and the handle's
    later close took whatever a worker thread had opened under that number
    meanwhile (a pin's pipe: 'your bind mounts could not be prepared (Bad
    file descriptor)'). Closed by the relay, the socket is detached at once."""
    import asyncio

    import h11

    from berth.proxy.handler import Handler

    runner = asyncio.run
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        runner = uvloop.run

    class Sink:
        def __init__(self):
            self.data = b""

        def write(self, data):
            self.data += data

    async def relay():
        ours, childs = socket.socketpair()
        childs.sendall(json.dumps({"status": 404, "message": "Could not find the file /x"}).encode() + b"\n")
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET /containers/c/archive?path=/x HTTP/1.1\r\nHost: docker\r\n\r\n")
        conn.next_event()
        sink = Sink()
        kept = await Handler.__new__(Handler)._copy_answer(conn, None, sink, None, "GET", ours, [], 0)
        await asyncio.sleep(0)
        childs.close()
        return kept, ours.fileno(), sink.data

    kept, fileno, answer = runner(relay())
    assert kept is False and answer.startswith(b"HTTP/1.1 404 ") and b"Could not find the file /x" in answer
    assert fileno == -1, "the relay left the copy child's socket open for the collector to close"
