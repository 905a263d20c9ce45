import threading

from berth.ops import logs


def test_last_lines(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"".join(f"line {i}\n".encode() for i in range(10000)))
    assert logs.last_lines(str(p), 3) == [b"line 9997\n", b"line 9998\n", b"line 9999\n"]
    assert logs.last_lines(str(p), 0) == []
    assert len(logs.last_lines(str(p), 20000)) == 10000
    q = tmp_path / "short"
    q.write_bytes(b"only\n")
    assert logs.last_lines(str(q), 5) == [b"only\n"]


def test_follow_sees_appends_and_truncation(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"old\n")
    got, changed, done, started = [], threading.Condition(), threading.Event(), threading.Event()

    def write(data):
        with changed:
            got.append(data)
            changed.notify_all()

    def stop():  # asked once the file is open and at its end, then at each poll
        started.set()
        return done.is_set()

    def seen(text):
        with changed:
            assert changed.wait_for(lambda: b"".join(got) == text, timeout=5), got

    t = threading.Thread(target=logs.follow, args=(str(p), write), kwargs={"poll": 0.01, "stop": stop})
    t.start()
    assert started.wait(5)
    with open(p, "ab") as f:
        f.write(b"new\n")
    seen(b"new\n")
    p.write_bytes(b"x\n")  # truncated by a rotation
    seen(b"new\nx\n")
    done.set()
    t.join(2)
    assert not t.is_alive()
