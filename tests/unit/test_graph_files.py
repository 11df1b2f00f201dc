"""Graph files: every file that holds no graph gives one problem, one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit import GraphError, load_graph_file, validate_graph
from flowkit.cli import main

GOOD_YAML = "nodes:\n  - node_id: a\n    type: w\n  - node_id: b\n    type: w\n    depends_on: [a]\n"


def load_error(path: Path) -> GraphError:
    with pytest.raises(GraphError) as info:
        load_graph_file(path)
    assert len(info.value.problems) == 1
    return info.value


# --- files that hold a graph -------------------------------------------------------------


def test_yaml_graph_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "graph.yaml"
    path.write_text(GOOD_YAML)
    assert validate_graph(load_graph_file(path)).node("b").depends_on == ("a",)


def test_json_graph_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    graph = {"nodes": [{"node_id": "a", "type": "w"}, {"node_id": "b", "type": "w"}], "edges": [["a", "b"]]}
    path.write_text(json.dumps(graph))
    assert validate_graph(load_graph_file(path)).node("b").depends_on == ("a",)


@pytest.mark.parametrize("name", ["graph.yaml", "graph.json"])
def test_utf8_byte_order_mark_is_not_content(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    text = GOOD_YAML if name.endswith(".yaml") else json.dumps({"nodes": [{"node_id": "a", "type": "w"}]})
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert "nodes" in load_graph_file(path)


def test_yaml_merge_key_overriding_a_merged_key_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(
        "x-base: &base {type: w, fan_in: all}\n"
        "x-mid: &mid\n  <<: *base\n  fan_in: any\n"
        "nodes:\n  - node_id: a\n    <<: *mid\n    type: v\n"
    )
    assert load_graph_file(path)["nodes"] == [{"node_id": "a", "type": "v", "fan_in": "any"}]


# --- files that do not: (file name, content, code, message after the path) ---------------

UNREADABLE = [
    pytest.param(
        "pipeline.yaml",
        b"nodes:\n  - node_id: a\n    type: w: x\n",
        "unparsable",
        ":3:12: not valid YAML: mapping values are not allowed here",
        id="malformed-yaml",
    ),
    pytest.param(
        "flow.yaml",
        b"nodes: [a, b\n  - :",
        "unparsable",
        ":2:5: not valid YAML: expected ',' or ']', but got ':'",
        id="unclosed-flow-sequence",
    ),
    pytest.param(
        "g.json",
        b'{"nodes": [\n    {"a": 1} {"b": 2}]}',
        "unparsable",
        ":2:14: not valid JSON: Expecting ',' delimiter",
        id="malformed-json",
    ),
    pytest.param(
        "data.bin",
        b"\x89PNG\r\n\x1a\n\x00\x00",
        "not_utf8",
        ": not UTF-8 text (byte 0x89 at offset 0)",
        id="binary",
    ),
    pytest.param(
        "latin1.yaml",
        b"nodes: [caf\xe9]\n",
        "not_utf8",
        ": not UTF-8 text (byte 0xe9 at offset 11)",
        id="latin-1-text",
    ),
    pytest.param(
        "nul.yaml",
        b"nodes: []\nx: \x00\n",
        "unparsable",
        ":2:4: not valid YAML: unacceptable character #x0000: special characters are not allowed",
        id="control-character",
    ),
    pytest.param(
        "empty.yaml",
        b"",
        "not_a_mapping",
        ": is empty; a graph file holds a mapping with 'nodes'",
        id="empty-yaml",
    ),
    pytest.param(
        "empty.json",
        b" \n\n",
        "not_a_mapping",
        ": is empty; a graph file holds a mapping with 'nodes'",
        id="blank-json",
    ),
    pytest.param(
        "comments.yaml",
        b"# nodes: to do\n",
        "not_a_mapping",
        ": is empty; a graph file holds a mapping with 'nodes'",
        id="only-comments",
    ),
    pytest.param(
        "list.yaml",
        b"- node_id: a\n",
        "not_a_mapping",
        ": holds a list, not a mapping with 'nodes'",
        id="list",
    ),
    pytest.param(
        "scalar.yaml",
        b"hello\n",
        "not_a_mapping",
        ": holds a string, not a mapping with 'nodes'",
        id="string",
    ),
    pytest.param(
        "number.json",
        b"42",
        "not_a_mapping",
        ": holds a number, not a mapping with 'nodes'",
        id="number",
    ),
    pytest.param("null.yaml", b"~\n", "not_a_mapping", ": holds null, not a mapping with 'nodes'", id="null"),
    pytest.param(
        "dup.yaml",
        b"nodes: []\nedges: []\nnodes: [{node_id: a, type: w}]\n",
        "unparsable",
        ":3:1: not valid YAML: duplicate key 'nodes' (first at line 1)",
        id="duplicate-yaml-key",
    ),
    pytest.param(
        "dup.json",
        b'{"nodes": [{"node_id": "a", "type": "w", "type": "v"}]}',
        "unparsable",
        ": duplicate key 'type' in a JSON object",
        id="duplicate-json-key",
    ),
    pytest.param(
        "two.yaml",
        b"---\nnodes: []\n---\nnodes: []\n",
        "unparsable",
        ":3:1: not valid YAML: expected a single document in the stream but found another document",
        id="two-documents",
    ),
    pytest.param(
        "tag.yaml",
        b"nodes: !!python/object/apply:os.system [echo]\n",
        "unparsable",
        ":1:8: not valid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-tag",
    ),
    pytest.param(
        "deep.json",
        b"[" * 100_000 + b"]" * 100_000,
        "unparsable",
        ": cannot parse: nested too deeply",
        id="deep-nesting",
    ),
]


@pytest.mark.parametrize(("name", "content", "code", "message"), UNREADABLE)
def test_file_without_a_graph_gives_one_problem_naming_it(
    tmp_path: Path, name: str, content: bytes, code: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    problem = load_error(path).first
    assert (problem.node_id, problem.field, problem.code) == (None, "file", code)
    assert problem.message == f"{path}{message}"


@pytest.mark.parametrize(("name", "content", "code", "message"), UNREADABLE)
def test_cli_validate_prints_that_problem_on_one_line_and_exits_2(
    tmp_path: Path, name: str, content: bytes, code: str, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # not an escaped error
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "invalid graph (1 problem):",
        f"  - graph: file: {path}{message} [{code}]",
    ]


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    problem = load_error(path).first
    assert problem.code == "unreadable"
    assert problem.message == f"{path}: cannot read: no such file or directory"
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert (result.exit_code, len(result.stderr.splitlines())) == (2, 2)
    assert "Traceback" not in result.stderr


def test_directory_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "graphs.yaml"
    path.mkdir()
    problem = load_error(path).first
    assert problem.code == "unreadable"
    assert problem.message == f"{path}: cannot read: is a directory"


def test_cli_rejects_a_directory_as_bad_usage_without_a_traceback(tmp_path: Path) -> None:
    # click's Path(dir_okay=False) answers before load_graph_file is reached
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert "Traceback" not in result.stderr
