"""Kubernetes, etcd and CoreDNS binaries, built from the Go module proxy and cached by version.

Kubernetes is built through a wrapper module that requires `k8s.io/kubernetes` and
repeats the `replace` lines of its own go.mod: upstream points its 30-odd staging
modules at `./staging/...`, which does not exist in the module download, so each one
is redirected to the published `v0.<minor>.<patch>` release. The list is read from
the downloaded go.mod, never written out here, so a version bump needs no edits.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
from pathlib import Path

from .. import golang
from ..common import Context, TestenvError, cache_lock, require_disk, run, say
from .etcd import build_etcd, etcd_bin

K8S_VERSION = "v1.37.2"
COREDNS_VERSION = "v1.15.0"
K8S_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
    "kube-proxy",
)
# Our own small commands (go/<name>/main.go), built in the same wrapper module:
# the pause image's binary and a CRI client that removes every pod sandbox at `down`.
LOCAL_COMMANDS = ("pause", "crisweep")
_LOCAL_SOURCES = Path(__file__).resolve().parent / "go"
# Packages whose version variables clients and servers report (`kubectl version`).
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)


def k8s_bin_dir(ctx: Context) -> Path:
    return ctx.cache / "kubernetes" / K8S_VERSION / "bin"


def coredns_bin(ctx: Context) -> Path:
    return ctx.cache / "coredns" / COREDNS_VERSION / "coredns"


def k8s_bin(ctx: Context, command: str) -> Path:
    return k8s_bin_dir(ctx) / command


def local_bin(ctx: Context, command: str) -> Path:
    """Keyed by a hash of our Go sources, so an edit rebuilds them."""
    return ctx.cache / "kubernetes" / K8S_VERSION / f"tools-{_local_sources_hash()}" / command


def _local_sources_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(_LOCAL_SOURCES.rglob("*.go")):
        digest.update(path.relative_to(_LOCAL_SOURCES).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _missing(paths: list[Path]) -> bool:
    return not all(p.exists() for p in paths)


def ensure_binaries(ctx: Context) -> None:
    """Build whatever is missing from the cache; a warm cache returns at once."""
    with cache_lock(ctx, "kubernetes"):
        kube = [k8s_bin(ctx, c) for c in K8S_COMMANDS]
        local = [local_bin(ctx, c) for c in LOCAL_COMMANDS]
        if _missing(kube) or _missing(local):
            _build_wrapper_module(ctx, kube_missing=_missing(kube))
        if not etcd_bin(ctx).exists():
            build_etcd(ctx, _go_env(ctx))
        if not coredns_bin(ctx).exists():
            _build_coredns(ctx)
        shutil.rmtree(_go_build_cache(ctx), ignore_errors=True)


def _go_build_cache(ctx: Context) -> Path:
    """Our own Go build cache (5 GB for Kubernetes), dropped once the binaries are cached."""
    return ctx.cache / "go" / "build-cluster"


def _go_env(ctx: Context) -> dict[str, str]:
    return golang.go_env(ctx, _go_build_cache(ctx))


def _require_go(ctx: Context, gib: float, what: str) -> str:
    go = golang.require_go(26, f"{what} (the `go` line of Kubernetes' go.mod)")
    require_disk(ctx.cache, gib, what)
    return go


def _build_wrapper_module(ctx: Context, kube_missing: bool) -> None:
    go = _require_go(ctx, 8.0 if kube_missing else 2.0, f"building Kubernetes {K8S_VERSION}")
    log = ctx.logfile("build-kubernetes")
    env = _go_env(ctx)
    src = ctx.cache / "kubernetes" / K8S_VERSION / "src"
    src.mkdir(parents=True, exist_ok=True)
    if kube_missing:
        say(
            f"building Kubernetes {K8S_VERSION} from the Go module proxy "
            f"(~6 min and 3 GB of memory the first time; log: {log})"
        )
    upstream_mod = _download_module_gomod(go, "k8s.io/kubernetes", K8S_VERSION, src, env, log)
    (src / "go.mod").write_text(_wrapper_gomod(upstream_mod))
    (src / "tools.go").write_text(_tools_go())
    shutil.rmtree(src / "cmd", ignore_errors=True)
    shutil.copytree(_LOCAL_SOURCES, src / "cmd")
    run([go, "mod", "tidy"], cwd=src, env=env, log=log)

    if kube_missing:
        _go_build_into(
            go,
            src,
            env,
            log,
            k8s_bin_dir(ctx),
            [f"k8s.io/kubernetes/cmd/{c}" for c in K8S_COMMANDS],
            _version_ldflags(),
        )
        say(f"Kubernetes {K8S_VERSION} binaries cached in {k8s_bin_dir(ctx)}")
    tools = local_bin(ctx, LOCAL_COMMANDS[0]).parent
    if not tools.exists():
        _go_build_into(go, src, env, log, tools, [f"./cmd/{c}" for c in LOCAL_COMMANDS], "-s -w")


def _go_build_into(
    go: str, src: Path, env: dict[str, str], log: Path, target: Path, packages: list[str], ldflags: str
) -> None:
    """Build into a scratch directory, then rename: a cache directory is always complete."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial) + "/", *packages],
        cwd=src,
        env=env,
        log=log,
    )
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _download_module_gomod(
    go: str, module: str, version: str, cwd: Path, env: dict[str, str], log: Path
) -> str:
    """Download `module@version` and return the text of its own go.mod."""
    if not (cwd / "go.mod").exists():
        (cwd / "go.mod").write_text("module flowkit.local/testenv-kubernetes\n")
    return Path(golang.mod_download(go, module, version, cwd, env, log)["GoMod"]).read_text()


def _wrapper_gomod(upstream: str) -> str:
    staging_modules = sorted(set(_STAGING_REPLACE.findall(upstream)))
    if not staging_modules:
        raise TestenvError(f"k8s.io/kubernetes {K8S_VERSION}: no staging replace lines in its go.mod")
    go_directive = _GO_DIRECTIVE.search(upstream)
    staging_version = "v0." + K8S_VERSION.split(".", 1)[1]  # v1.37.2 -> v0.37.2
    lines = [
        "module flowkit.local/testenv-kubernetes",
        "",
        f"go {go_directive.group(1) if go_directive else '1.25'}",
        "",
        f"require k8s.io/kubernetes {K8S_VERSION}",
        "",
        *(f"replace {m} => {m} {staging_version}" for m in staging_modules),
        "",
    ]
    return "\n".join(lines)


def _tools_go() -> str:
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in K8S_COMMANDS)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"


def _version_ldflags() -> str:
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in _VERSION_PACKAGES:
        flags += [
            f"-X {package}.gitVersion={K8S_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _build_coredns(ctx: Context) -> None:
    go = _require_go(ctx, 3.0, f"building CoreDNS {COREDNS_VERSION}")
    log = ctx.logfile("build-coredns")
    target = coredns_bin(ctx)
    gobin = target.parent / "bin.partial"
    shutil.rmtree(gobin, ignore_errors=True)
    say(f"building CoreDNS {COREDNS_VERSION} from the Go module proxy (~2 min the first time)")
    run(
        [go, "install", "-trimpath", "-ldflags", "-s -w", f"github.com/coredns/coredns@{COREDNS_VERSION}"],
        env={**_go_env(ctx), "GOBIN": str(gobin), "GOFLAGS": "-buildvcs=false"},
        log=log,
        cwd=ctx.cache,
    )
    (gobin / "coredns").rename(target)
    shutil.rmtree(gobin, ignore_errors=True)


if __name__ == "__main__":  # `python3 -m testenv_lib.cluster.build`: warm the cache alone
    ensure_binaries(Context.from_env())
    sys.exit(0)
