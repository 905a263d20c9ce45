"""The pure parts of pinning: pin paths, dockerd's answers shown with the
user's paths, and what a failed resolution answers."""

import errno
import json

from berth.proxy import binds as proxybinds
from berth.proxy import pins


def store(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    return pins.Store(1001, str(records), "/run/berth/alice/pins")


def test_only_this_stores_pins_have_tokens(tmp_path):
    s = store(tmp_path)
    assert s.token_of("/run/berth/alice/pins/0123456789abcdef") == "0123456789abcdef"
    for other in ("/run/berth/bob/pins/0123456789abcdef", "/run/berth/alice/pins/../x",
                  "/run/berth/alice/pins/0123456789ABCDEF", "/home/alice/data", ""):
        assert s.token_of(other) is None


def test_an_answer_shows_the_users_paths_as_go_encodes_them(tmp_path):
    s = store(tmp_path)
    (tmp_path / "records" / "0123456789abcdef").write_text("/home/alice/a&b <x>\n")
    body = json.dumps({"Mounts": [{"Source": "/run/berth/alice/pins/0123456789abcdef"},
                                  {"Source": "/run/berth/alice/pins/fedcba9876543210"}]}).encode()
    shown = s.display(body)
    assert b'"/home/alice/a\\u0026b \\u003cx\\u003e"' in shown
    assert json.loads(shown)["Mounts"][0]["Source"] == "/home/alice/a&b <x>"
    assert b"fedcba9876543210" in shown  # no record: left as it is
    assert s.display(b'{"Mounts": []}') == b'{"Mounts": []}'


def test_what_a_failed_source_answers():
    assert proxybinds._answer_for("/x", False, 0) is None
    status, message = proxybinds._answer_for("/home/bob/s", False, errno.EACCES)
    assert status == 403 and message.startswith("berth: a bind of /home/bob/s, which your account cannot reach;")
    status, message = proxybinds._answer_for("/etc/x", True, errno.EACCES)
    assert status == 403 and "does not exist and you may not create" in message
    status, message = proxybinds._answer_for("/gone", False, errno.ENOENT)
    assert (status, message) == (400, 'invalid mount config for type "bind": bind source path does not exist: /gone')
    status, message = proxybinds._answer_for("/a/file/x", False, errno.ENOTDIR)
    assert status == 400 and message.startswith("berth: a bind of /a/file/x: not a directory")
