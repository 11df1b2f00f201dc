"""WorkerConfig / CoordinatorConfig: defaults < file < environment < overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowkit import ConfigError, CoordinatorConfig, WorkerConfig


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_worker_config_loads_a_json_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, "worker.json", json.dumps({"roles": ["processor", "analyzer"], "lease_ttl_sec": 30})
    )
    cfg = WorkerConfig.load(path)
    assert cfg.roles == ["processor", "analyzer"]
    assert cfg.lease_ttl_sec == 30
    assert cfg.hb_interval_sec == 20  # the seed default


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "worker.json", json.dumps({"roles": ["processor", "analyzer"]}))
    cfg = WorkerConfig.load(path, overrides={"roles": ["processor"]})
    assert cfg.roles == ["processor"]


def test_environment_sits_between_file_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "worker.json", json.dumps({"hb_interval_sec": 5, "roles": ["a"]}))
    monkeypatch.setenv("FLOWKIT_WORKER_HB_INTERVAL_SEC", "7")
    monkeypatch.setenv("FLOWKIT_WORKER_ROLES", "x,y")
    cfg = WorkerConfig.load(path, overrides={"roles": ["z"]})
    assert cfg.hb_interval_sec == 7
    assert cfg.roles == ["z"]
    assert WorkerConfig.load(path).roles == ["x", "y"]


def test_coordinator_config_reads_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_COORDINATOR_WORKER_TYPES", '["indexer", "processor"]')
    assert CoordinatorConfig.load().worker_types == ["indexer", "processor"]


def test_missing_config_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*absent\.json"):
        WorkerConfig.load(tmp_path / "absent.json")


def test_unparsable_config_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", '{"roles": [')
    with pytest.raises(ConfigError, match=r"bad\.json is not valid"):
        WorkerConfig.load(path)


def test_config_file_with_bad_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "worker.json", json.dumps({"lease_ttl_sec": -1}))
    with pytest.raises(ConfigError, match="lease_ttl_sec") as info:
        WorkerConfig.load(path)
    assert "worker.json" in str(info.value)


def test_config_file_with_unknown_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "worker.json", json.dumps({"rolez": ["a"]}))
    with pytest.raises(ConfigError, match="rolez"):
        WorkerConfig.load(path)
