from berth import status


def row(**kw):
    base = dict(user="alice", uid=1001, block="10.213.0.0/24", bridge="bth1001", state="up", pid=42,
                containers_running=2, uptime_seconds=3725.0, net_ip="10.213.0.2",
                docker_host="unix:///run/berth/alice/docker.sock", log_file="/var/log/berth/alice.log",
                bridge_present=True)
    base.update(kw)
    return status.UserStatus(**base)


def test_human_duration():
    assert status.human_duration(None) == "-"
    assert status.human_duration(5) == "5s"
    assert status.human_duration(125) == "2m05s"
    assert status.human_duration(3725) == "1h02m"
    assert status.human_duration(90000) == "1d1h"


def test_table_has_header_rows_and_summary():
    text = status.render_table([row(), row(user="bob", uid=1002, state="down", pid=None,
                                           containers_running=None, uptime_seconds=None)])
    lines = text.splitlines()
    assert lines[0].split() == list(status.COLUMNS)
    assert lines[1].split() == ["alice", "1001", "10.213.0.0/24", "bth1001", "up", "42", "2", "1h02m"]
    assert lines[2].split()[4:] == ["down", "-", "-", "-"]
    assert lines[-1] == "2 user(s), 1 up"


def test_detail_shows_block_ip_and_docker_host():
    text = status.render_detail(row())
    assert "10.213.0.0/24" in text and "10.213.0.2" in text
    assert "unix:///run/berth/alice/docker.sock" in text


def test_json_schema_keys():
    assert set(row().to_json()) == {"user", "uid", "block", "bridge", "state", "pid", "containers_running",
                                    "uptime_seconds", "net_ip", "docker_host", "log_file", "bridge_present"}
