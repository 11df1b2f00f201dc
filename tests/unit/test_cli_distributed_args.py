"""The distributed commands' arguments, without services: which settings a process gets
(flag > environment > file > default), what is checked before connecting, what the
client commands print and how they exit (on an in-memory store)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowkit.cli import main
from flowkit.config import ConnectionSettings, CoordinatorConfig, WorkerConfig
from flowkit.console import distributed
from flowkit.console.client import Client
from flowkit.console.connection import ClientSettings, _reason, connection_overrides
from flowkit.console.follow import follow_task
from flowkit.console.listing import format_ago, worker_liveness
from flowkit.coordinator.core import new_task_status
from flowkit.graph import load_graph_file, validate_graph
from flowkit.states import State, TaskStatus
from flowkit.store.memory import MemoryStore

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "examples" / "etl" / "pipeline.yaml")
HANDLERS = "examples.etl.handlers:HANDLERS"
ENV_NAMES = [
    "FLOWKIT_KAFKA_BOOTSTRAP",
    "FLOWKIT_MONGO_URL",
    "FLOWKIT_TOPIC_PREFIX",
    "FLOWKIT_WORKER_ROLES",
    "FLOWKIT_WORKER_CAPACITY",
    "FLOWKIT_WORKER_HB_INTERVAL_SEC",
    "FLOWKIT_COORDINATOR_COORDINATOR_ID",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(REPO)  # examples.etl.handlers imports from here
    monkeypatch.setattr(distributed, "log_to_stderr", lambda verbose: None)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The config (and handlers) each process command would have served with."""
    calls: list[Any] = []

    async def serve_coordinator(cfg: CoordinatorConfig) -> int:
        calls.append(cfg)
        return 0

    async def serve_worker(cfg: WorkerConfig, handlers: dict[str, Any]) -> int:
        calls.append((cfg, handlers))
        return 0

    monkeypatch.setattr(distributed, "serve_coordinator", serve_coordinator)
    monkeypatch.setattr(distributed, "serve_worker", serve_worker)
    return calls


class RecordingFeed:
    def __init__(self) -> None:
        self.notices: list[tuple[str, str]] = []

    def announce(self, task_id: str, reason: str) -> None:
        self.notices.append((task_id, reason))


class FakeInstallation:
    """What ``open_client`` would have connected to: a MemoryStore and a recording feed."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.feed = RecordingFeed()
        self.settings: list[tuple[ConnectionSettings, bool]] = []

    @contextlib.asynccontextmanager
    async def open_client(self, settings: ConnectionSettings, *, kafka: bool) -> AsyncIterator[Client]:
        self.settings.append((settings, kafka))
        yield Client(self.store, self.feed if kafka else None)  # type: ignore[arg-type]

    def add_task(self, state: State, task_id: str = "t1") -> TaskStatus:
        spec = validate_graph(load_graph_file(EXAMPLE))
        status = new_task_status(task_id, spec, {}, owner="coord-a")
        status.status = state
        for node in status.nodes.values():
            node.status = state
        asyncio.run(self.store.create_task(status, spec.model_dump(mode="json"), owner="coord-a"))
        return status


@pytest.fixture
def installation(monkeypatch: pytest.MonkeyPatch) -> FakeInstallation:
    fake = FakeInstallation()
    monkeypatch.setattr(distributed, "open_client", fake.open_client)
    return fake


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


# -- the processes' settings ----------------------------------------------------------


def test_coordinator_flags_win_over_environment(served: list[Any]) -> None:
    env = {
        "FLOWKIT_KAFKA_BOOTSTRAP": "env-kafka:9092",
        "FLOWKIT_MONGO_URL": "mongodb://env-db:27017/envdb",
        "FLOWKIT_TOPIC_PREFIX": "env.",
    }
    result = invoke(
        "coordinator",
        *("--kafka", "flag-kafka:9092", "--mongo", "mongodb://flag-db/flagdb", "--topic-prefix", "flag."),
        *("--id", "coord-7"),
        env=env,
    )
    assert result.exit_code == 0, result.output
    [cfg] = served
    assert cfg.kafka_bootstrap == "flag-kafka:9092"
    assert cfg.mongo_url.get_secret_value() == "mongodb://flag-db/flagdb"
    assert cfg.topic_prefix == "flag."
    assert cfg.coordinator_id == "coord-7"


def test_environment_wins_over_the_config_file_and_the_file_over_defaults(
    served: list[Any], tmp_path: Path
) -> None:
    config = tmp_path / "coordinator.yaml"
    config.write_text("kafka_bootstrap: file-kafka:9092\ntopic_prefix: file.\nadopt_interval_sec: 0.5\n")
    result = invoke("coordinator", "--config", str(config), env={"FLOWKIT_KAFKA_BOOTSTRAP": "env-kafka:1"})
    assert result.exit_code == 0, result.output
    [cfg] = served
    assert cfg.kafka_bootstrap == "env-kafka:1"
    assert cfg.topic_prefix == "file."
    assert cfg.adopt_interval_sec == 0.5
    assert cfg.mongo_url.get_secret_value() == "mongodb://localhost:27017/flowkit"


def test_a_bad_config_file_exits_2_naming_it(served: list[Any], tmp_path: Path) -> None:
    config = tmp_path / "coordinator.yaml"
    config.write_text("adopt_interval_sec: -1\n")
    result = invoke("coordinator", "--config", str(config))
    assert result.exit_code == 2
    assert f"in {config}" in result.stderr
    assert "adopt_interval_sec" in result.stderr
    assert served == []


def test_worker_flags_win_over_environment(served: list[Any]) -> None:
    env = {"FLOWKIT_WORKER_ROLES": "loader", "FLOWKIT_WORKER_CAPACITY": "7", "FLOWKIT_KAFKA_BOOTSTRAP": "e:1"}
    result = invoke(
        "worker",
        *("--roles", "extractor,transformer", "--capacity", "3", "--id", "w-1", "--handlers", HANDLERS),
        *("--kafka", "f:2"),
        env=env,
    )
    assert result.exit_code == 0, result.output
    [(cfg, handlers)] = served
    assert cfg.roles == ["extractor", "transformer"]
    assert cfg.capacity == 3
    assert cfg.worker_id == "w-1"
    assert cfg.kafka_bootstrap == "f:2"
    assert set(handlers) == {"extractor", "transformer", "loader", "rates"}


def test_worker_roles_and_capacity_come_from_the_environment_without_flags(served: list[Any]) -> None:
    env = {"FLOWKIT_WORKER_ROLES": "loader,rates", "FLOWKIT_WORKER_CAPACITY": "5"}
    result = invoke("worker", "--handlers", HANDLERS, env=env)
    assert result.exit_code == 0, result.output
    [(cfg, _)] = served
    assert cfg.roles == ["loader", "rates"]
    assert cfg.capacity == 5


def test_worker_role_without_a_handler_exits_2_naming_it(served: list[Any]) -> None:
    result = invoke("worker", "--roles", "extractor,painter", "--handlers", HANDLERS)
    assert result.exit_code == 2
    assert "--roles: no handler for 'painter' in examples.etl.handlers:HANDLERS" in result.stderr
    assert "extractor, loader, rates, transformer" in result.stderr
    assert served == []


def test_worker_with_a_bad_handlers_spec_exits_2_with_the_import_message(served: list[Any]) -> None:
    result = invoke("worker", "--roles", "a", "--handlers", "no_such_module_xyz:HANDLERS")
    assert result.exit_code == 2
    assert "--handlers 'no_such_module_xyz:HANDLERS': cannot import module 'no_such_module_xyz'" in (
        result.stderr
    )
    assert served == []


def test_worker_without_roles_anywhere_exits_2(served: list[Any]) -> None:
    result = invoke("worker", "--handlers", HANDLERS)
    assert result.exit_code == 2
    assert "no roles: pass --roles a,b" in result.stderr
    assert served == []


def test_worker_capacity_must_be_positive(served: list[Any]) -> None:
    result = invoke("worker", "--roles", "loader", "--handlers", HANDLERS, "--capacity", "0")
    assert result.exit_code == 2
    assert served == []


# -- the client commands ---------------------------------------------------------------


def test_an_invalid_graph_is_refused_before_connecting(
    installation: FakeInstallation, tmp_path: Path
) -> None:
    graph = tmp_path / "bad.yaml"
    graph.write_text("nodes:\n  - {node_id: a, type: x, depends_on: [ghost]}\n")
    result = invoke("submit", str(graph), "--wait")
    assert result.exit_code == 2
    assert "invalid graph (1 problem)" in result.stderr
    assert "node 'a': depends_on: 'ghost' is not a node of this graph" in result.stderr
    assert installation.settings == []  # never connected, nothing stored


def test_a_bad_param_is_refused_before_connecting(installation: FakeInstallation) -> None:
    result = invoke("submit", EXAMPLE, "--param", "no-equals-sign")
    assert result.exit_code == 2
    assert "--param 'no-equals-sign': expected KEY=VALUE" in result.stderr
    assert installation.settings == []


def test_submit_settings_take_flags_over_environment(installation: FakeInstallation) -> None:
    env = {"FLOWKIT_MONGO_URL": "mongodb://env/envdb", "FLOWKIT_TOPIC_PREFIX": "env."}
    result = invoke("submit", EXAMPLE, "--mongo", "mongodb://flag/flagdb", env=env)
    assert result.exit_code == 0, result.output
    [(settings, kafka)] = installation.settings
    assert settings.mongo_url.get_secret_value() == "mongodb://flag/flagdb"
    assert settings.topic_prefix == "env."
    assert kafka  # the "new" notice goes over Kafka


def test_a_client_reads_the_connection_from_a_worker_config_file(
    installation: FakeInstallation, tmp_path: Path
) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("kafka_bootstrap: file-kafka:9092\nroles: [loader]\ncapacity: 4\n")
    result = invoke("tasks", "--config", str(config))
    assert result.exit_code == 0, result.output
    [(settings, kafka)] = installation.settings
    assert settings.kafka_bootstrap == "file-kafka:9092"
    assert not kafka  # listing needs MongoDB only


def test_submit_stores_the_task_unowned_announces_it_and_prints_its_id(
    installation: FakeInstallation,
) -> None:
    result = invoke("submit", EXAMPLE, "--id", "task-1", "--param", "day=2026-11-23", "--param", "n=3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "task-1\n"
    stored = asyncio.run(installation.store.get_task("task-1"))
    assert stored is not None
    assert stored.owner is None
    assert stored.status == State.QUEUED
    assert stored.params == {"day": "2026-11-23", "n": 3}
    assert len(stored.nodes) == 6
    assert installation.feed.notices == [("task-1", "new")]


def test_submit_with_an_existing_id_keeps_the_task(installation: FakeInstallation) -> None:
    installation.add_task(State.RUNNING, "task-1")
    result = invoke("submit", EXAMPLE, "--id", "task-1")
    assert result.exit_code == 0, result.output
    assert "task task-1 exists already: not submitted again" in result.stderr
    assert result.stdout == "task-1\n"
    stored = asyncio.run(installation.store.get_task("task-1"))
    assert stored is not None and stored.owner == "coord-a"


def test_submit_wait_timeout_stops_watching_without_cancelling(installation: FakeInstallation) -> None:
    result = invoke("submit", EXAMPLE, "--id", "task-1", "--wait", "--json", "--timeout", "0.3")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "queued"
    assert "stopped watching; task task-1 keeps running (flowkit cancel task-1)" in result.stderr
    assert ("task-1", "cancel") not in installation.feed.notices
    stored = asyncio.run(installation.store.get_task("task-1"))
    assert stored is not None and stored.cancel_requested is None


@pytest.mark.parametrize(("state", "code"), [(State.FINISHED, 0), (State.FAILED, 1), (State.CANCELLED, 1)])
def test_watch_exits_by_the_final_state(installation: FakeInstallation, state: State, code: int) -> None:
    installation.add_task(state)
    result = invoke("watch", "t1", "--json")
    assert result.exit_code == code, result.output
    assert json.loads(result.stdout)["status"] == state.value


def test_status_prints_the_summary_table_or_json(installation: FakeInstallation) -> None:
    installation.add_task(State.RUNNING)
    table = invoke("status", "t1")
    assert table.exit_code == 0, table.output
    assert "task t1  running  0/6 nodes done" in table.stdout
    assert "held by coordinator coord-a" in table.stdout
    as_json = invoke("status", "t1", "--json")
    assert json.loads(as_json.stdout)["nodes"]["extract"]["status"] == "running"


@pytest.mark.parametrize("command", ["status", "watch", "cancel"])
def test_an_unknown_task_exits_2(installation: FakeInstallation, command: str) -> None:
    result = invoke(command, "nope")
    assert result.exit_code == 2
    assert "task 'nope' not found" in result.stderr


def test_cancel_requests_it_and_tells_the_owner(installation: FakeInstallation) -> None:
    installation.add_task(State.RUNNING)
    result = invoke("cancel", "t1")
    assert result.exit_code == 0, result.output
    assert "cancel requested: task t1 (running) is cancelled by coord-a" in result.stdout
    stored = asyncio.run(installation.store.get_task("t1"))
    assert stored is not None and stored.cancel_requested
    assert installation.feed.notices == [("t1", "cancel")]


def test_cancel_of_an_ended_task_says_so_and_exits_0(installation: FakeInstallation) -> None:
    installation.add_task(State.FINISHED)
    result = invoke("cancel", "t1")
    assert result.exit_code == 0, result.output
    assert "task t1 has already ended (finished): nothing to cancel" in result.stdout
    assert installation.feed.notices == []


def test_tasks_lists_id_state_progress_and_owner(installation: FakeInstallation) -> None:
    installation.add_task(State.FINISHED, "done-task")
    installation.add_task(State.RUNNING, "busy-task")
    result = invoke("tasks", "--state", "running")
    assert result.exit_code == 0, result.output
    assert "busy-task" in result.stdout and "coord-a" in result.stdout
    assert "done-task" not in result.stdout
    assert "0/6" in result.stdout


def test_workers_shows_a_silent_worker_as_stale(installation: FakeInstallation) -> None:
    now = time.time()
    for worker_id, heartbeat in (("w-live", now - 1), ("w-silent", now - 600)):
        fields = {"roles": ["loader"], "capacity": 2, "busy": 1, "status": "online", "host": "h", "pid": 7}
        asyncio.run(installation.store.set_worker_state(worker_id, {**fields, "last_heartbeat": heartbeat}))
    result = invoke("workers", env={"FLOWKIT_WORKER_HB_INTERVAL_SEC": "5"})
    assert result.exit_code == 0, result.output
    live, silent = (line for line in result.stdout.splitlines() if "w-" in line)
    assert "online" in live and "1s ago" in live and "h/7" in live
    assert "stale" in silent and "10m ago" in silent


# -- the pieces ------------------------------------------------------------------------


def test_worker_liveness_trusts_a_goodbye_and_distrusts_silence() -> None:
    now = 1000.0
    assert worker_liveness({"status": "online", "last_heartbeat": 990}, now, 5) == "online"
    assert worker_liveness({"status": "online", "last_heartbeat": 980}, now, 5) == "stale"
    assert worker_liveness({"status": "offline", "last_heartbeat": 999}, now, 5) == "offline"
    assert worker_liveness({"status": "draining", "last_heartbeat": 999}, now, 5) == "draining"


def test_ages_read_in_the_largest_unit() -> None:
    assert format_ago(97.0, 100.0) == "3s ago"
    assert format_ago(100.0 - 125, 100.0) == "2m ago"
    assert format_ago(100.0 - 7300, 100.0) == "2h ago"
    assert format_ago(None, 100.0) == "-"


def test_only_given_connection_flags_become_overrides() -> None:
    assert connection_overrides(None, "mongodb://h/db", None) == {"mongo_url": "mongodb://h/db"}


def test_driver_messages_never_show_the_password() -> None:
    settings = ClientSettings(mongo_url="mongodb://bob:s3cret@db:27017/x")  # type: ignore[arg-type]
    reason = _reason(RuntimeError("auth failed for mongodb://bob:s3cret@db:27017/x (s3cret)"), settings)
    assert "s3cret" not in reason
    assert "mongodb://bob:***@db:27017/x" in reason


async def test_the_follower_reads_again_on_each_change_until_the_end() -> None:
    store = MemoryStore()
    spec = validate_graph({"nodes": [{"node_id": "a", "type": "r"}]})
    await store.create_task(new_task_status("t", spec, {}, owner=None), spec.model_dump(mode="json"))
    seen: list[State] = []
    follower = asyncio.create_task(
        follow_task(store, "t", lambda s: seen.append(s.status), poll_sec=30, min_interval_sec=0)
    )
    for state in (State.RUNNING, State.FINISHED):
        await asyncio.sleep(0.05)
        await store.update_task("t", {"status": state})
    final = await asyncio.wait_for(follower, 5)  # woken by the writes, not by the 30 s poll
    assert final.status == State.FINISHED
    assert seen == [State.QUEUED, State.RUNNING, State.FINISHED]
