"""Images without Docker: a Debian base from debootstrap, Dockerfiles built with buildah,
both imported into the test node's containerd.

- The base image (Debian bookworm minbase + Python 3.11) is bootstrapped once and kept
  in the cache as a docker-archive; buildah's own storage (also in the cache) holds it
  as `localhost/flowkit-base:<key>`, which Dockerfiles receive as `--build-arg BASE`.
- Builds run `buildah bud --isolation chroot`. This machine re-signs outgoing TLS with
  a local CA, so the host's CA bundle is mounted for the build only (`--volume`, at
  /run/host-ca.crt) and offered to pip through the `PIP_CERT` build argument; a
  volume is not part of any layer, so the CA never ends up in the image.
- The result is pushed to a docker-archive and imported with
  `ctr -n k8s.io images import` into the node's containerd; pods use it with
  `imagePullPolicy: Never`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from . import docker_archive
from .cluster.node import running_containerd_socket
from .cluster.sweep import unmount_all_under
from .common import Context, TestenvError, cache_lock, cached, ensure_debian_packages, require_disk, run, say

BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_CA_IN_BUILD = "/run/host-ca.crt"
DEBIAN_MIRROR = os.environ.get("FLOWKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
_BASE_KEY = hashlib.sha256(f"{BASE_SUITE} minbase {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:10]
BASE_IMAGE = f"localhost/flowkit-base:{BASE_SUITE}-{_BASE_KEY}"
_BUILD_PACKAGES = ("buildah", "debootstrap")
# Accept unsigned images: everything buildah handles here is local.
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


# -- the base image ----------------------------------------------------------------
def base_archive(ctx: Context) -> Path:
    return ctx.cache / "images" / f"flowkit-base-{BASE_SUITE}-{_BASE_KEY}.tar"


def ensure_base_archive(ctx: Context) -> Path:
    return cached(ctx, base_archive(ctx), "base-image", lambda archive: _bootstrap_base(ctx, archive))


def _remove_stale_bootstraps(images: Path) -> None:
    """A killed bootstrap leaves its root (maybe with /proc mounted in it) behind."""
    for stale in images.glob("bootstrap-*"):
        unmount_all_under(stale)
        shutil.rmtree(stale, ignore_errors=True)


def _bootstrap_base(ctx: Context, archive: Path) -> None:
    ensure_debian_packages(ctx, _BUILD_PACKAGES, "building images without Docker")
    _remove_stale_bootstraps(archive.parent)
    require_disk(ctx.cache, 2.0, "bootstrapping the base image")
    log = ctx.logfile("image-base")
    say(
        f"bootstrapping the base image ({BASE_SUITE} minbase + {', '.join(BASE_PACKAGES)}; "
        f"~40 s, once; log: {log})"
    )
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix="bootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        try:
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    BASE_SUITE,
                    str(rootfs),
                    DEBIAN_MIRROR,
                ],
                log=log,
            )
        finally:
            unmount_all_under(rootfs)  # debootstrap leaves /proc and /sys mounted when it fails
        _slim_rootfs(rootfs)
        layer = Path(tmp) / "layer.tar"
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(layer), "."], log=log)
        docker_archive.write(
            archive,
            BASE_IMAGE,
            layer,
            {
                "Cmd": ["python3"],
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            },
        )
    say(f"base image cached: {archive} ({archive.stat().st_size / 2**20:.0f} MiB)")


def _slim_rootfs(rootfs: Path) -> None:
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*",
        "var/log/*.log",
        "dev/*",
        "proc/*",
        "sys/*",
        "run/*",
        "tmp/*",
    ):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


# -- buildah -------------------------------------------------------------------------
def _buildah(ctx: Context, *args: str, log: Path) -> None:
    run(["buildah", *_storage_flags(ctx), *args], log=log)


def _storage_flags(ctx: Context) -> list[str]:
    return [
        "--root",
        str(ctx.cache / "buildah" / "storage"),
        "--runroot",
        str(ctx.run / "buildah-runroot"),
        "--storage-driver",
        "overlay",
    ]


def _policy_file(ctx: Context) -> Path:
    policy = ctx.cache / "buildah" / "policy.json"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps(_POLICY))
    return policy


def _ensure_base_in_buildah(ctx: Context, log: Path) -> None:
    inspect = run(["buildah", *_storage_flags(ctx), "inspect", "--type", "image", BASE_IMAGE], check=False)
    if inspect.returncode == 0:
        return
    archive = ensure_base_archive(ctx)
    _buildah(ctx, "pull", "--signature-policy", str(_policy_file(ctx)), f"docker-archive:{archive}", log=log)


def build(ctx: Context, dockerfile: str, tag: str) -> None:
    """`scripts/testenv image build [--tag T] [DOCKERFILE]`: the context is the Dockerfile's folder."""
    path = Path(dockerfile).resolve()
    if not path.is_file():
        raise TestenvError(f"no Dockerfile at {path}")
    ensure_debian_packages(ctx, _BUILD_PACKAGES, "building images without Docker")
    containerd_socket_or_fail(ctx)
    log = ctx.logfile("image-build")
    with cache_lock(ctx, "buildah"):
        _remove_buildah_leftovers(ctx, log)
        _ensure_base_in_buildah(ctx, log)
        archive = _build_to_archive(ctx, path, tag, log)
    load(ctx, str(archive))
    archive.unlink(missing_ok=True)


def _remove_buildah_leftovers(ctx: Context, log: Path) -> None:
    """A killed build leaves mounts and working containers in buildah's storage."""
    unmount_all_under(ctx.cache / "buildah")
    run(["buildah", *_storage_flags(ctx), "rm", "--all"], log=log, check=False)


def _build_to_archive(ctx: Context, path: Path, tag: str, log: Path) -> Path:
    started = time.monotonic()
    say(f"building {tag} from {path} on {BASE_IMAGE} (log: {log})")
    policy = str(_policy_file(ctx))
    args = ["bud", "--isolation", "chroot", "--signature-policy", policy, "--pull-never"]
    args += ["--build-arg", f"BASE={BASE_IMAGE}", "-t", tag, "-f", str(path)]
    if HOST_CA_BUNDLE.exists():
        # For RUN steps only: a volume is not part of any layer.
        args += ["--build-arg", f"PIP_CERT={HOST_CA_IN_BUILD}"]
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_IN_BUILD}:ro"]
    try:
        _buildah(ctx, *args, str(path.parent), log=log)
    finally:
        unmount_all_under(ctx.cache / "buildah")
    archive = ctx.run / "images" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) + ".tar")
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    _buildah(ctx, "push", "--signature-policy", policy, tag, f"docker-archive:{archive}:{tag}", log=log)
    run(["buildah", *_storage_flags(ctx), "rmi", "--prune"], log=log, check=False)
    say(f"built {tag} in {time.monotonic() - started:.0f}s")
    return archive


# -- containerd ------------------------------------------------------------------------
def containerd_socket_or_fail(ctx: Context) -> Path:
    socket = running_containerd_socket(ctx)
    if socket is None:
        raise TestenvError("the test node is not running: start it with `scripts/testenv up cluster`")
    return socket


def load(ctx: Context, archive: str) -> None:
    """`scripts/testenv image load FILE.tar`: import a docker-archive into the node."""
    path = Path(archive).resolve()
    if not path.is_file():
        raise TestenvError(f"no image archive at {path}")
    socket = containerd_socket_or_fail(ctx)
    say(f"importing {path.name} into the node's containerd")
    started = time.monotonic()
    proc = run(["ctr", "--address", str(socket), "-n", "k8s.io", "images", "import", str(path)], check=False)
    if proc.returncode != 0:
        raise TestenvError(f"ctr images import {path} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    names = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("unpacking ")]
    say(f"imported {', '.join(names) or path.name} in {time.monotonic() - started:.0f}s")
