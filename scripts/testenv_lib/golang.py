"""Go builds from the module proxy: FerretDB (ferretdb.py), Kubernetes and CoreDNS
(cluster/build.py). One module cache, `<cache>/go/mod`, so modules download once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .common import Context, TestenvError, run


def go_env(ctx: Context, build_cache: Path) -> dict[str, str]:
    go = ctx.cache / "go"
    return {
        "GOMODCACHE": str(go / "mod"),
        "GOCACHE": str(build_cache),
        "GOPATH": str(go / "path"),
        # Never fetch another toolchain: the installed Go must be new enough.
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "-mod=mod -buildvcs=false",
        "CGO_ENABLED": "0",
    }


def require_go(minor: int, why: str) -> str:
    """The `go` command (on PATH, or Go's usual /usr/local/go), at least Go 1.<minor>."""
    go = shutil.which("go") or next((g for g in ("/usr/local/go/bin/go",) if Path(g).exists()), None)
    hint = f"{why} needs Go 1.{minor} or newer on PATH"
    if go is None:
        raise TestenvError(f"go not found: {hint}")
    found = run([go, "env", "GOVERSION"]).stdout.strip()  # e.g. go1.26.8
    parts = found.removeprefix("go").split(".")
    if parts[0] == "1" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < minor:
        raise TestenvError(f"{go} is {found}: {hint}")
    return go


def mod_download(
    go: str, module: str, version: str, cwd: Path, env: dict[str, str], log: Path
) -> dict[str, str]:
    """`go mod download -json module@version` (run in a module at `cwd`): its Dir, GoMod, …"""
    proc = run(
        [go, "mod", "download", "-json", f"{module}@{version}"], cwd=cwd, env=env, check=False, timeout=900
    )
    with log.open("a") as out:
        out.write(proc.stdout + proc.stderr)
    try:
        info = json.loads(proc.stdout)
    except ValueError:
        info = {}
    if proc.returncode != 0 or not isinstance(info, dict) or info.get("Error") or "Dir" not in info:
        error = info.get("Error") if isinstance(info, dict) else None
        raise TestenvError(f"go mod download {module}@{version} failed{f': {error}' if error else ''}", log)
    return {str(k): str(v) for k, v in info.items()}
