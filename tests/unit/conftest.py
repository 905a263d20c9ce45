"""Unit tests run as root in CI: what the login hook would leave in the host's
/run/berth-login (a digest of each config it reads) goes to a temp dir."""

import pytest

from berth import logindigest


@pytest.fixture(autouse=True)
def _private_login_digests(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(logindigest, "DIR", str(tmp_path_factory.mktemp("berth-login")))
