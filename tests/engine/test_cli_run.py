"""`flowkit run / validate / graph` end to end: exit codes, --json output, messages."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "etl" / "pipeline.yaml"

HANDLERS_MODULE = """
import asyncio
from flowkit.worker.handlers.base import Batch, BatchResult, Handler, HandlerError


class Ok(Handler):
    async def process_batch(self, batch, ctx):
        return BatchResult(metrics={"done": 1})


class Broken(Handler):
    async def process_batch(self, batch, ctx):
        raise HandlerError("schema_mismatch", "column 'x' is missing", permanent=True)


class Slow(Handler):
    async def process_batch(self, batch, ctx):
        for _ in range(600):
            if ctx.cancel_flag.is_set():
                raise asyncio.CancelledError()
            await asyncio.sleep(0.05)
        return BatchResult()


HANDLERS = {"ok": Ok(), "broken": Broken(), "slow": Slow()}
"""

FAILING_GRAPH = {
    "nodes": [
        {"node_id": "good", "type": "ok"},
        {"node_id": "bad", "type": "broken", "retry_policy": {"max": 3}},
        {"node_id": "after_bad", "type": "ok", "depends_on": ["bad"]},
    ]
}
SLOW_GRAPH = {
    "nodes": [
        {"node_id": "sleepy", "type": "slow"},
        {"node_id": "next", "type": "ok", "depends_on": ["sleepy"]},
    ]
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a handlers module (unique per test) and graphs; the current directory."""
    name = f"cli_handlers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(HANDLERS_MODULE)
    (tmp_path / "failing.json").write_text(json.dumps(FAILING_GRAPH))
    (tmp_path / "slow.json").write_text(json.dumps(SLOW_GRAPH))
    (tmp_path / "spec.txt").write_text(f"{name}:HANDLERS")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _spec(workdir: Path) -> str:
    return (workdir / "spec.txt").read_text()


def _flowkit(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowkit.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_the_example_runs_and_json_stdout_holds_only_the_final_status() -> None:
    proc = _flowkit("run", str(EXAMPLE), "--handlers", "examples.etl.handlers:HANDLERS", "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not a terminal: quiet except errors
    status = json.loads(proc.stdout)
    assert status["status"] == "finished"
    nodes = status["nodes"]
    assert {n["status"] for n in nodes.values()} == {"finished"}
    assert nodes["fetch_rates"]["attempts"] == 2  # failed once, retried
    assert nodes["transform"]["batches"] == 12  # 4 pages of 12 orders, rechunked by 5
    assert nodes["load"]["metrics"]["loaded"] == 48
    assert status["result"]["totals"]["orders"] == 48


def test_a_person_gets_a_summary_table_on_stdout(workdir: Path) -> None:
    graph = workdir / "one.yaml"
    graph.write_text("nodes:\n  - {node_id: only, type: ok}\n")
    result = CliRunner().invoke(main, ["run", str(graph), "--handlers", _spec(workdir)])
    assert result.exit_code == 0, result.output
    assert "only" in result.stdout
    assert "finished" in result.stdout
    assert "done=1" in result.stdout


def test_a_failed_task_exits_1_with_the_node_error_in_json(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", "failing.json", "--handlers", _spec(workdir), "--json"])
    assert result.exit_code == 1
    status = json.loads(result.stdout)
    assert status["status"] == "failed"
    assert status["nodes"]["good"]["status"] == "finished"
    assert status["nodes"]["bad"]["attempts"] == 1  # permanent: not retried
    assert status["nodes"]["bad"]["error"]["code"] == "schema_mismatch"
    assert status["nodes"]["after_bad"]["error"]["code"] == "upstream_failed"


def test_an_invalid_graph_exits_2_naming_every_node_and_field(workdir: Path) -> None:
    (workdir / "bad.yaml").write_text(
        "nodes:\n  - {node_id: a, type: ok, depends_on: [ghost]}\n  - {node_id: b, type: unknown_role}\n"
    )
    result = CliRunner().invoke(main, ["run", "bad.yaml", "--handlers", _spec(workdir)])
    assert result.exit_code == 2
    assert "invalid graph (2 problems)" in result.stderr
    assert "node 'a': depends_on: 'ghost' is not a node of this graph" in result.stderr
    assert "node 'b': type: no handler serves role 'unknown_role'" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("handlers", "message"),
    [
        ("no_such_module_xyz:HANDLERS", "cannot import module 'no_such_module_xyz'"),
        ("{module}:MISSING", "has no attribute 'MISSING'"),
        ("{module}", "expected MODULE:ATTR"),
    ],
)
def test_a_bad_handlers_spec_exits_2_with_a_clear_message(workdir: Path, handlers: str, message: str) -> None:
    module = _spec(workdir).split(":")[0]
    result = CliRunner().invoke(main, ["run", "failing.json", "--handlers", handlers.format(module=module)])
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_bad_param_exits_2(workdir: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", "failing.json", "--handlers", _spec(workdir), "--param", "oops"]
    )
    assert result.exit_code == 2
    assert "--param 'oops': expected KEY=VALUE" in result.stderr


def test_timeout_cancels_the_task_and_exits_1(workdir: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", "slow.json", "--handlers", _spec(workdir), "--json", "--timeout", "0.5"]
    )
    assert result.exit_code == 1
    status = json.loads(result.stdout)
    assert status["status"] == "cancelled"
    assert status["nodes"]["sleepy"]["status"] == "cancelled"
    assert "timed out after 0.5s" in result.stderr


def test_ctrl_c_cancels_cooperatively_and_exits_130(workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowkit.cli", "run", "slow.json", "--handlers", _spec(workdir)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    for line in proc.stderr:  # one line per state change when stderr is not a terminal
        if "sleepy: running" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "interrupted (Ctrl-C), cancelling" in stderr
    assert "cancelled" in stdout


def test_graph_svg_of_the_run_is_coloured_by_node_state(workdir: Path) -> None:
    result = CliRunner().invoke(
        main, ["run", "failing.json", "--handlers", _spec(workdir), "--json", "--graph-svg", "run.svg"]
    )
    assert result.exit_code == 1
    svg = (workdir / "run.svg").read_text()
    assert "<title>bad (failed)</title>" in svg
    assert "<title>good (finished)</title>" in svg
    assert "schema_mismatch" in svg


def test_validate_prints_ok_or_every_problem() -> None:
    ok = CliRunner().invoke(main, ["validate", str(EXAMPLE)])
    assert ok.exit_code == 0
    assert "OK" in ok.stdout and "6 nodes" in ok.stdout
    roles = CliRunner().invoke(main, ["validate", str(EXAMPLE), "--roles", "extractor,transformer,loader"])
    assert roles.exit_code == 2
    assert "node 'fetch_rates': type: no handler serves role 'rates'" in roles.stderr


def test_validate_reports_an_unreadable_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_graph_draws_mermaid_and_svg(tmp_path: Path) -> None:
    mermaid = CliRunner().invoke(main, ["graph", str(EXAMPLE)])
    assert mermaid.exit_code == 0
    assert "extract -. first_batch .-> transform" in mermaid.stdout
    assert 'report{{"<b>report</b><br/>fn: merge.generic"}}' in mermaid.stdout
    out = tmp_path / "etl.svg"
    svg = CliRunner().invoke(main, ["graph", str(EXAMPLE), "--format", "svg", "-o", str(out)])
    assert svg.exit_code == 0
    assert out.read_text().startswith("<svg")


def test_png_is_written_with_a_converter_or_refused_with_a_hint(tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    result = CliRunner().invoke(main, ["graph", str(EXAMPLE), "--format", "png", "-o", str(out)])
    if importlib.util.find_spec("cairosvg") is not None:
        assert result.exit_code == 0
        assert out.read_bytes().startswith(b"\x89PNG")
    else:
        assert result.exit_code == 2
        assert "--format svg" in result.stderr
        assert not out.exists()
