"""One-layer docker-archive files (`docker save` format), written without Docker.

Used for the base image (image.py) and the node's pause image (cluster/node.py);
buildah and `ctr images import` read them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def write(archive: Path, tag: str, layer: Path, config: dict[str, object]) -> None:
    """A one-layer docker-archive from a layer tarball (written atomically)."""
    diff_id = "sha256:" + file_sha256(layer)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "flowkit testenv"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [layer_name]}]
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w") as tar:
        _add_bytes(tar, config_name, config_bytes)
        tar.add(layer, arcname=layer_name)
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    partial.replace(archive)


def single_file_layer(layer: Path, name: str, data: bytes) -> None:
    """A layer tarball holding one executable file."""
    with tarfile.open(layer, "w") as tar:
        _add_bytes(tar, name, data, mode=0o755)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def file_sha256(path: Path) -> str:
    """The file's SHA-256, hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
