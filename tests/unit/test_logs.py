import threading
import time

from berth import logs


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
    got, done = [], threading.Event()
    t = threading.Thread(target=logs.follow, args=(str(p), got.append), kwargs={"poll": 0.01, "stop": done.is_set})
    t.start()
    time.sleep(0.05)
    with open(p, "ab") as f:
        f.write(b"new\n")
    time.sleep(0.05)
    p.write_bytes(b"x\n")  # truncated by a rotation
    time.sleep(0.1)
    done.set()
    t.join(2)
    assert b"".join(got) == b"new\nx\n"
