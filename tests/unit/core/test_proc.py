import os

from berth.core import proc


def test_parse_stat_with_spaces_and_parens_in_comm():
    text = "4242 (weird) name)) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 123456 0 0"
    st = proc.parse_stat(text)
    assert st.pid == 4242
    assert st.state == "S"
    assert st.ppid == 1
    assert st.start_ticks == 123456


def test_alive_checks_start_time():
    st = proc.stat(os.getpid())
    assert proc.alive(os.getpid(), st.start_ticks)
    assert not proc.alive(os.getpid(), st.start_ticks + 1)
    assert not proc.alive(2 ** 22 + 1, 0)


def test_descendants():
    tree = {1: [2, 3], 2: [4], 4: [5]}
    assert sorted(proc.descendants(1, tree)) == [2, 3, 4, 5]
    assert proc.descendants(3, tree) == []


def test_cmdline_and_rss_of_self():
    assert proc.cmdline(os.getpid())
    assert proc.rss_bytes(os.getpid()) > 0


def test_a_record_with_keys_of_another_version_is_still_recognised(tmp_path):
    from berth.core import paths, record
    up = paths.UserPaths("alice", str(tmp_path), "", "")
    (tmp_path / "dockerd.rec").write_text("pid=42\nstart_ticks=7\nstarted_at=1.0\ndockerd=/usr/sbin/dockerd\n"
                                          "future=1\n")
    rec = record.read(up)
    assert (rec.pid, rec.start_ticks, rec.bridge) == (42, 7, "")


def test_owner():
    assert proc.owner(os.getpid()) == os.getuid()
    assert proc.owner(2 ** 22 + 1) is None


def test_record_round_trip_without_json(tmp_path):
    from berth.core import paths, record
    up = paths.UserPaths("alice", str(tmp_path), "", "")
    rec = record.DaemonRecord(42, 7, 1.5, "/usr/sbin/dockerd", "bth1001")
    record.write(up, rec)
    assert record.read(up) == rec
    assert (tmp_path / "dockerd.rec").read_text().splitlines()[0] == "pid=42"
    (tmp_path / "dockerd.rec").write_text("pid=notanumber\n")
    assert record.read(up) is None
