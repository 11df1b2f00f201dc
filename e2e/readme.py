"""The README's "On Kubernetes" commands, as the e2e suite runs them.

The fenced block with `helm install` is read from README.md and its commands run one
by one in bash. Only what must differ between runs is changed, each change checked so
that a README edit the suite does not follow fails loudly instead of passing untested:
the namespace and release (fresh per run), the image (the one this session built), the
database in MONGO_URL (fresh per run) and a topic prefix of the run's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## On Kubernetes"
NAMESPACE = "flowkit"
RELEASE = "flowkit"


def section_blocks(text: str, heading: str = SECTION) -> list[str]:
    """The fenced ```sh blocks of one README section."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"```sh\n(.*?)```", body, flags=re.S)


def commands(block: str) -> list[str]:
    """One entry per command: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def install_commands(readme: Path = README) -> list[str]:
    """The commands of the block that installs the chart."""
    for block in section_blocks(readme.read_text()):
        if "helm install" in block:
            return commands(block)
    raise AssertionError(f"{readme}: no ```sh block with `helm install` under {SECTION!r}")


@dataclass(frozen=True)
class RunSettings:
    """What one run of the README's commands uses instead of the README's own names."""

    namespace: str
    release: str
    image_repository: str
    image_tag: str
    database: str
    topic_prefix: str


def _sub(command: str, old: str, new: str) -> str:
    if old not in command:
        raise AssertionError(f"the README's command no longer contains {old!r}: {command}")
    return command.replace(old, new)


def adapt(command: str, run: RunSettings) -> str:
    """`command` with the run's own names (see the module docstring)."""
    ns = run.namespace
    if command.startswith("helm install "):
        command = _sub(command, f"helm install {RELEASE} ", f"helm install {run.release} ")
        command = _sub(command, f"--namespace {NAMESPACE} ", f"--namespace {ns} ")
        command = _sub(command, f"{{{NAMESPACE}}}", f"{{{ns}}}")
        command = _sub(command, "image.repository=flowkit ", f"image.repository={run.image_repository} ")
        command = _sub(command, "image.tag=dev ", f"image.tag={run.image_tag} ")
        command += f" --set topicPrefix={run.topic_prefix}"
    elif command.startswith("MONGO_URL="):
        command = _sub(command, "}flowkit", "}" + run.database)
    elif command.startswith("kubectl "):
        command = _sub(command, f"kubectl -n {NAMESPACE} ", f"kubectl -n {ns} ")
    return command
