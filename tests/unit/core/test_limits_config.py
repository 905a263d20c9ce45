"""Per-user limits: sizes, the config's tables, and the cgroup writes (pure)."""

import pytest

from berth.core import config, limits


@pytest.mark.parametrize("text, size", [("64G", 64 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("", 0),
                                        (0, 0), (4096, 4096), ("100MiB", 100 << 20), ("2g", 2 << 30)])
def test_sizes(text, size):
    assert limits.parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "-1G", -5, True, [1]])
def test_a_size_that_is_not_one_says_what_is(bad):
    with pytest.raises(ValueError, match="64G"):
        limits.parse_size(bad)


def test_a_users_own_limits_go_over_the_defaults():
    cfg = config.parse({"limits": {"memory": "64G", "cpu_weight": 100, "pids": 20000,
                                   "users": {"alice": {"memory": "200G"}}}})
    assert limits.for_user(cfg.limits.defaults, cfg.limits.users, "alice") == (200 << 30, 100, 20000)
    assert limits.for_user(cfg.limits.defaults, cfg.limits.users, "bob") == (64 << 30, 100, 20000)
    assert limits.for_user(config.Config().limits.defaults, {}, "bob") == limits.NONE  # no [limits]: none


@pytest.mark.parametrize("table, words", [
    ({"memory": "lots"}, "[limits].memory = 'lots' is invalid"),
    ({"cpu_weight": 20000}, "1 to 10000"),
    ({"swap": "1G"}, "swap: unknown"),
    ({"users": {"alice": {"pids": -1}}}, "[limits.users.alice].pids"),
    ({"users": {"no such/name": {}}}, "does not name a user"),
    ({"users": {"alice": 5}}, "a table for each user"),
])
def test_bad_limits_are_refused_with_the_key(table, words):
    with pytest.raises(config.ConfigError) as e:
        config.parse({"limits": table})
    assert words in str(e.value)


def test_what_is_written_for_cgroup_v1_and_v2():
    set_ = limits.Limits(1 << 30, 300, 500)
    assert limits.writes(set_, 1) == [("memory", "memory.limit_in_bytes", str(1 << 30)),
                                      ("cpu", "cpu.shares", "3072"), ("pids", "pids.max", "500")]
    assert limits.writes(set_, 2) == [("memory", "memory.max", str(1 << 30)), ("cpu", "cpu.weight", "300"),
                                      ("pids", "pids.max", "500")]
    # no limit is written as such: a limit taken out of the config is lifted
    assert limits.writes(limits.NONE, 1) == [("memory", "memory.limit_in_bytes", "-1"), ("cpu", "cpu.shares", "1024"),
                                             ("pids", "pids.max", "max")]
    assert limits.v1_shares(1) == 10 and limits.v1_shares(100) == 1024


@pytest.mark.parametrize("text, value", [
    ("8589934592\n", 8 << 30), ("max\n", 0), ("9223372036854771712\n", 0), ("-1", 0), ("", 0)])
def test_a_cgroups_memory_limit_reads_with_none_as_zero(text, value):
    assert limits.memory_limit(text) == value
