import json

import pytest

from common.errors import ConfigError
from router.settings import load_settings


def test_shipped_default_settings_validate():
    s = load_settings("router/settings.default.json")
    assert s.host == "127.0.0.1" and s.policy == "pareto_uniform" and s.api_keys


@pytest.mark.parametrize("bad, message", [
    ({"api_keys": {"k": "a"}, "max_batch": 3}, "max_batch: Extra inputs"),
    ({"api_keys": {}}, "api_keys"),
    ({"api_keys": {"k": "a"}, "port": 70000}, "port"),
    ({"api_keys": {"k": "a"}, "request_timeout_ms": 0}, "request_timeout_ms"),
    ({"api_keys": {"k": "a"}, "workers": 0}, "workers: Input should be greater than or equal to 1"),
    ({"api_keys": {"k": "a"}, "workers": 4096}, "4096 workers exceed this machine's"),
    ({"api_keys": {"k": "a"}, "triton_protocol": "udp"}, "triton_protocol"),
    ({"api_keys": {"k": "a"}, "max_in_flight": 0}, "max_in_flight"),
])
def test_bad_settings_raise_with_the_key(tmp_path, bad, message):
    (tmp_path / "s.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path / "s.json")


def test_missing_settings_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "none.json")


def test_more_workers_than_cores_only_when_asked(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"api_keys": {"k": "a"}, "workers": 4096,
                                                 "allow_more_workers_than_cores": True}))
    assert load_settings(tmp_path / "s.json").workers == 4096
