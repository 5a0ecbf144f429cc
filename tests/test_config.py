"""The config loader: typed values from TOML, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import config
from bridge.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
[api]
listen = "127.0.0.1:9000"
[store]
path = "data/simbridge.db"
[[accounts]]
login = "user@email.com"
access_key = "k"
webhook_url = "http://127.0.0.1:3000/webhook"
[[devices]]
id = "sim-1"
kind = "virtual"
account = "user@email.com"
latency = 0.5
[[devices]]
id = "modem-1"
kind = "modem"
account = "user@email.com"
port = "/dev/ttyUSB0"
pin = "1234"
max_per_minute = 10
"""


def load_text(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config.load(path)


def test_a_good_file_becomes_typed_config(tmp_path):
    cfg = load_text(tmp_path, GOOD)
    assert cfg.api.listen == ("127.0.0.1", 9000)
    assert cfg.api.public_url == "http://127.0.0.1:9000"  # follows listen when not given
    assert cfg.agents.listen == ("127.0.0.1", 8765)  # the contract's default
    assert cfg.store.path == tmp_path / "data" / "simbridge.db"  # relative to the file
    assert cfg.account("user@email.com").webhook_format == "insim"
    virtual, modem = cfg.devices
    assert virtual.max_per_minute == 30 and virtual.options == {"latency": 0.5}
    assert modem.options == {"port": "/dev/ttyUSB0", "pin": "1234"} and modem.max_per_minute == 10


def test_the_example_config_is_valid():
    cfg = config.load(ROOT / "config.example.toml")
    assert cfg.devices and cfg.accounts


@pytest.mark.parametrize("change, complaint", [
    (("[api]", "[api]\nlisten_on = \"x\""), "api.listen_on: unknown key"),
    (("[api]", "[bogus]\n[api]"), "bogus: unknown section"),
    (('listen = "127.0.0.1:9000"', 'listen = 9000'), "api.listen: must be a string, not int"),
    (('listen = "127.0.0.1:9000"', 'listen = "nowhere"'), "api.listen: must be HOST:PORT"),
    (('latency = 0.5', 'latency = "slow"'), "devices[0].latency: must be an integer or a number"),
    (('latency = 0.5', 'latency = -1'), "devices[0].latency: must not be negative"),
    (('latency = 0.5', 'port = "/dev/x"'), "devices[0].port: unknown key"),
    (('id = "modem-1"', 'id = "sim-1"'), "devices[1].id: duplicate device id 'sim-1'"),
    (('port = "/dev/ttyUSB0"\n', ''), "devices[1].port: required for a device of kind 'modem'"),
    (('kind = "virtual"', 'kind = "pigeon"'), "devices[0].kind: must be one of"),
    (('account = "user@email.com"\nlatency', 'account = "nobody@x"\nlatency'),
     "devices[0].account: no account 'nobody@x' (accounts are: user@email.com)"),
    (('access_key = "k"', ''), "accounts[0].access_key: required"),
    (('webhook_url = "http://127.0.0.1:3000/webhook"', 'webhook_url = "ftp://x"'),
     "accounts[0].webhook_url: must be an http:// or https:// URL"),
    (('[store]', '[agents]\nlease_s = 600\n[store]'), "agents.requeue_grace_s: must be longer than agents.lease_s"),
    (('[store]', '[api2]\n[store]'), "api2: unknown section"),
    (('max_per_minute = 10', 'max_per_minute = true'), "devices[1].max_per_minute: must be an integer or a number, not true/false"),
])
def test_a_bad_file_is_refused_naming_the_key(tmp_path, change, complaint):
    old, new = change
    assert old in GOOD
    with pytest.raises(config.ConfigError) as err:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    assert complaint in str(err.value)
    assert str(tmp_path / "config.toml") in str(err.value)


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        load_text(tmp_path, "[api\nlisten = ")
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(tmp_path / "absent.toml")


def test_check_config_command(tmp_path, capsys):
    path = tmp_path / "config.toml"
    path.write_text(GOOD)
    assert main(["check-config", "--config", str(path)]) == 0
    assert "OK (1 account(s), 2 device(s))" in capsys.readouterr().out
    path.write_text(GOOD.replace("kind = \"virtual\"", "kind = 3"))
    assert main(["check-config", "--config", str(path)]) == 2
    assert "devices[0].kind: must be a string" in capsys.readouterr().err


def test_demo_config_is_written_for_the_other_commands(tmp_path):
    cfg = config.demo(tmp_path / "demo")
    assert (tmp_path / "demo" / "config.toml").exists()
    assert cfg.api.listen == ("127.0.0.1", 8080)
    assert cfg.account("demo@example.com").access_key == "demo-access-key"
    assert [d.kind for d in cfg.devices] == ["virtual"]
    assert config.load(tmp_path / "demo" / "config.toml") == cfg
