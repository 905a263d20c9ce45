"""Durations and sizes as status and usage print them."""

from berth.ops import humanize


def test_human_units():
    assert humanize.human_duration(None) == "-"
    assert humanize.human_duration(5) == "5s"
    assert humanize.human_duration(125) == "2m05s"
    assert humanize.human_duration(3725) == "1h02m"
    assert humanize.human_duration(90000) == "1d1h"
    assert humanize.human_bytes(0) == "-"
    assert humanize.human_bytes(130 * 2**20) == "130 MiB"
    assert humanize.human_bytes(3 * 2**30) == "3.0 GiB"
