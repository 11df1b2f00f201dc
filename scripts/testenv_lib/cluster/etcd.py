"""etcd, built from the Go module proxy and cached by version.

Debian's etcd-server (3.4) is older than Kubernetes 1.37 supports: watches that ask for
progress notifications (watch-list, `sendInitialEvents=true`) fail against it with
"the required storage feature RequestWatchProgress is disabled". So etcd is built like
Kubernetes: a wrapper module requiring `go.etcd.io/etcd/server/v3`, whose root package
is etcd's own `main` (a two-line call of `etcdmain.Main`). The wrapper's go.mod carries
upstream's `go` line and nothing else, so MVS picks exactly the versions that etcd
release was tested with. The version etcd reports is a constant of its api module
(`go.etcd.io/etcd/api/v3/version.Version`), so only the git SHA, which upstream's
build script stamps, is set here.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import golang
from ..common import Context, require_disk, run, say

ETCD_VERSION = "v3.6.16"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
_MODULE_NAME = "flowkit.local/testenv-etcd"
_GO_DIRECTIVE = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)
# Upstream's ./build stamps the commit here; a module build has none.
_GIT_SHA_VARIABLE = "go.etcd.io/etcd/api/v3/version.GitSHA"


def etcd_bin(ctx: Context) -> Path:
    """Keyed by version alone: the build uses upstream's own main, no source of ours."""
    return ctx.cache / "etcd" / ETCD_VERSION / "etcd"


def build_etcd(ctx: Context, env: dict[str, str]) -> None:
    """Build `etcd_bin(ctx)` with the Go environment `env` (the caller holds the cache lock)."""
    go = golang.require_go(26, f"building etcd {ETCD_VERSION} (the `go` line of its go.mod)")
    require_disk(ctx.cache, 2.0, f"building etcd {ETCD_VERSION}")
    log = ctx.logfile("build-etcd")
    target = etcd_bin(ctx)
    src = target.parent / "src"
    src.mkdir(parents=True, exist_ok=True)
    say(f"building etcd {ETCD_VERSION} from the Go module proxy (~1 min the first time; log: {log})")
    if not (src / "go.mod").exists():
        (src / "go.mod").write_text(f"module {_MODULE_NAME}\n")
    upstream = Path(golang.mod_download(go, ETCD_MODULE, ETCD_VERSION, src, env, log)["GoMod"]).read_text()
    (src / "go.mod").write_text(_wrapper_gomod(upstream))
    (src / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{ETCD_MODULE}"\n')
    run([go, "mod", "tidy"], cwd=src, env=env, log=log)
    partial = target.with_name(target.name + ".partial")
    ldflags = f"-s -w -X {_GIT_SHA_VARIABLE}=module-{ETCD_VERSION}"
    run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), ETCD_MODULE],
        cwd=src,
        env=env,
        log=log,
    )
    partial.rename(target)  # a cached binary is always complete
    say(f"etcd {ETCD_VERSION} cached as {target}")


def _wrapper_gomod(upstream: str) -> str:
    go_directive = _GO_DIRECTIVE.search(upstream)
    return "\n".join(
        [
            f"module {_MODULE_NAME}",
            "",
            f"go {go_directive.group(1) if go_directive else '1.25'}",
            "",
            f"require {ETCD_MODULE} {ETCD_VERSION}",
            "",
        ]
    )
