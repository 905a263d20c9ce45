"""berth's one record format."""

import pytest

from berth.core import keyvalue


def test_fields_read_back_as_written():
    fields = {"pid": 42, "path": "/run/berth/a=b", "empty": ""}
    assert keyvalue.parse(keyvalue.render(fields).encode()) == {"pid": "42", "path": "/run/berth/a=b", "empty": ""}


@pytest.mark.parametrize("fields", [{"a": "x\ny=1"}, {"a=b": "1"}, {"": "1"}])
def test_what_would_read_back_as_something_else_is_never_written(fields):
    with pytest.raises(ValueError):
        keyvalue.render(fields)


@pytest.mark.parametrize("raw", [b"no equals sign\n", b"\xff=1\n"])
def test_what_is_not_key_value_lines_is_unreadable(raw):
    with pytest.raises(ValueError):
        keyvalue.parse(raw)
