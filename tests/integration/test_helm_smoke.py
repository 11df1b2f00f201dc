"""Smoke test of the helm binary from the cache: render a tiny chart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 0.1.0\n",
    "values.yaml": "greeting: hello\n",
    "templates/configmap.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-greeting\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    ),
}


def test_helm_template_renders_a_tiny_chart_with_overridden_values(helm: str, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    for name, text in CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    # Keep helm's caches and config out of the user's home.
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [helm, "template", "demo", str(chart), "--set", "greeting=hi"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    [configmap] = [doc for doc in yaml.safe_load_all(out) if doc]
    assert configmap["metadata"]["name"] == "demo-greeting"
    assert configmap["data"] == {"greeting": "hi"}
