import ipaddress
from pathlib import Path

import pytest

from berth.core import config
from berth.core.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "berth.toml"
    p.write_text(text)
    return str(p)


def test_defaults_when_default_file_missing(monkeypatch):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DEFAULT_PATH", "/nonexistent/berth.toml")
    cfg = config.load()
    assert cfg.paths.state_dir == Path("/var/lib/berth")
    assert cfg.network.pool == ipaddress.IPv4Network("10.213.0.0/16")
    assert cfg.network.block_prefix == 24
    assert cfg.network.bridge_prefix == "bth"
    assert cfg.users.min_uid == 1000
    assert cfg.net_container.name == "net"
    assert cfg.reaper.idle_timeout == 3600


def test_env_var_names_the_file(tmp_path):
    path = write(tmp_path, '[paths]\nstate_dir = "/srv/berth"\n[network]\npool = "10.9.0.0/16"\n')
    cfg = config.load(environ={config.ENV_VAR: path})
    assert cfg.paths.state_dir == Path("/srv/berth")
    assert cfg.paths.run_dir == Path("/run/berth")
    assert str(cfg.network.pool) == "10.9.0.0/16"


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize("text, words", [
    ("[network]\npoool = '10.0.0.0/16'\n", ["[network].poool", "allowed: pool"]),
    ("[netwrk]\n", ["unknown section [netwrk]"]),
    ("[network]\nblock_prefix = '24'\n", ["[network].block_prefix", "integer from 8 to 26"]),
    ("[network]\npool = '10.0.0.1/16'\n", ["[network].pool", "no host bits"]),
    ("[network]\npool = 'fd00::/64'\n", ["IPv4"]),
    ("[network]\npool = '10.0.0.0/24'\nblock_prefix = 24\n", ["longer than the pool"]),
    ("[network]\nbridge_prefix = 'toolong'\n", ["[network].bridge_prefix"]),
    ("[paths]\nstate_dir = 'relative'\n", ["[paths].state_dir", "absolute path"]),
    ("[users]\nmin_uid = true\n", ["[users].min_uid"]),
    ("[users]\nmin_uid = 5000\nmax_uid = 4000\n", ["[users].max_uid = 4000 is below min_uid = 5000"]),
    ("[paths]\nrun_dir = '/run'\n", ["[paths].run_dir", "not a directory the host shares"]),
    ("[paths]\nstate_dir = '/var/lib/'\n", ["[paths].state_dir", "of berth's own"]),
    ("[daemon]\nstart_timeout = -1\n", ["[daemon].start_timeout", "greater than 0"]),
    ("[daemon_json]\nbridge = 'docker0'\n", ["[daemon_json].bridge", "set by berth"]),
    ("[daemon_json]\niptables = true\n", ["[daemon_json].iptables"]),
    ("not toml at all [\n", ["not valid TOML"]),
])
def test_bad_config_names_key_and_what_is_allowed(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    for w in words:
        assert w in e.value.one_line()
    assert path in e.value.one_line()


def test_daemon_json_extras_are_kept_and_frozen(tmp_path):
    path = write(tmp_path, '[daemon_json]\ndefault-runtime = "nvidia"\n'
                           '[daemon_json.runtimes.nvidia]\npath = "nvidia-container-runtime"\n')
    cfg = config.load(path)
    assert cfg.daemon_json["default-runtime"] == "nvidia"
    assert cfg.daemon_json["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    with pytest.raises(TypeError):
        cfg.daemon_json["x"] = 1


def test_example_config_parses_to_the_defaults(tmp_path):
    path = write(tmp_path, config.example_text())
    cfg = config.load(path)
    assert cfg.network == config.Config().network
    assert cfg.paths == config.Config().paths
    assert cfg.daemon == config.Config().daemon


def test_config_is_frozen():
    cfg = config.Config()
    with pytest.raises(AttributeError):
        cfg.network.pool = None


def test_a_config_from_the_environment_is_not_taken_when_environ_is_given_empty(tmp_path, monkeypatch):
    """The login hook passes environ={}: BERTH_CONFIG from a session means nothing."""
    monkeypatch.setenv("BERTH_CONFIG", write(tmp_path, "[network\n"))
    assert config.load(environ={}).source in ("(defaults)", config.DEFAULT_PATH)


def test_slurm_section():
    cfg = config.parse({"slurm": {"enabled": True, "login_gpus": "all"}})
    assert cfg.slurm.enabled and cfg.slurm.login_gpus == "all"
    assert config.parse({}).slurm.enabled is False


@pytest.mark.parametrize("table", [{"enabled": "yes"}, {"login_gpus": "some"}, {"gres": 1}])
def test_slurm_section_refuses_what_it_cannot_mean(table):
    with pytest.raises(ConfigError):
        config.parse({"slurm": table})
