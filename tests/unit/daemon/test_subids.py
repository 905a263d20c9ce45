from berth.daemon import subids
from berth.daemon.subids import RANGE, SubId

START = 1_000_000_000


def test_parse_keeps_file_order_and_skips_junk():
    text = "alice:100000:65536\n# comment\nbroken\nberth-1001:1001:1\nberth-1001:1000000000:65536\n"
    assert subids.parse(text) == [SubId("alice", 100000, 65536), SubId("berth-1001", 1001, 1),
                                  SubId("berth-1001", START, RANGE)]


def test_the_lowest_free_aligned_base():
    assert subids.choose_base([], [], set(), START) == START
    taken = [SubId("berth-1001", START, RANGE)]
    assert subids.choose_base(taken, [], set(), START) == START + RANGE
    # a foreign range in subgid only, straddling an alignment: skipped past
    assert subids.choose_base([], [SubId("x", START + 10, RANGE)], set(), START) == START + 2 * RANGE
    # a uid in use inside the range
    assert subids.choose_base([], [], {START + 5}, START) == START + RANGE
    # nothing fits below the limit
    assert subids.choose_base([], [], set(), START, limit=START + RANGE - 1) is None


def test_current_base_only_when_the_lines_are_exactly_berths():
    want = subids.wanted("berth-1001", 1001, 100, START)
    u, g = want.uid_lines, want.gid_lines
    assert subids.current_base(u, g, "berth-1001", 1001, 100) == START
    assert subids.current_base(u[::-1], g, "berth-1001", 1001, 100) is None  # order matters to dockerd
    assert subids.current_base(u, g[:1], "berth-1001", 1001, 100) is None
    assert subids.current_base(u, g, "berth-1001", 1002, 100) is None  # another user's uid
    # a line keyed by the account's numeric uid counts too (dockerd takes it)
    stray = [SubId("998", 5, 1), *u]
    assert subids.current_base(stray, g, "berth-1001", 1001, 100, account_uid=998) is None


def test_the_users_own_lines_are_not_berths():
    text = "alice:100000:65536\nberth-1001:1001:1\nberth-1001:1000000000:65536\n"
    assert subids.lines_of(subids.parse(text), "berth-1001") == [SubId("berth-1001", 1001, 1),
                                                                 SubId("berth-1001", START, RANGE)]


def test_stores_of_an_earlier_mapping_are_closed_to_all_but_root(tmp_path):
    from berth.daemon import userns
    for name, mode in (("1001.1001", 0o710), ("1001.999", 0o710), ("volumes", 0o755), ("1001.5", 0o700)):
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(mode)
    closed = userns.close_other_stores(str(tmp_path), keep="1001.999")
    assert closed == [str(tmp_path / "1001.1001")]
    assert (tmp_path / "1001.1001").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "1001.999").stat().st_mode & 0o777 == 0o710  # the store in use: dockerd's
    assert (tmp_path / "volumes").stat().st_mode & 0o777 == 0o755  # not a store
    assert userns.close_other_stores(str(tmp_path / "absent"), keep="x") == []
