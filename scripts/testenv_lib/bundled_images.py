"""Images for the chart's bundled mode on the test node, made from what testenv already has.

The chart's `kafka.bundled` and `mongodb.bundled` run the official `apache/kafka` and
`mongo` images, which cannot be pulled here. The same software stands in, built locally:

- Kafka: the jars testenv resolved for its own broker (`kafka.libs_dir`) and a Java
  runtime cut from the host's JDK with `jlink`, behind the two scripts the chart calls
  (`bin/kafka-storage.sh`, `bin/kafka-server-start.sh`); e2e/images/kafka/.
- MongoDB: the FerretDB binary testenv builds (`ferretdb.binary`), which speaks the
  MongoDB protocol; e2e/images/ferretdb/.

Each image is tagged with a content key (its Dockerfile folder, the jar names and sizes,
the JDK's release file, the binary's hash): when the node's containerd already has that
tag, nothing is built. The build contexts are staged in the cache, keyed the same way.
`scripts/testenv image bundled` prints the chart values that select them, as JSON.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from . import ferretdb, image, kafka
from .common import Context, TestenvError, cached, say
from .docker_archive import file_sha256

IMAGES_DIR = Path(__file__).resolve().parents[2] / "e2e" / "images"
KAFKA_REPOSITORY = "flowkit-test/kafka"
FERRETDB_REPOSITORY = "flowkit-test/ferretdb"
# What Kafka needs of the JDK (java.se covers JMX, naming, SASL, scripting, XML).
JRE_MODULES = (
    "java.se",
    "jdk.unsupported",
    "jdk.management",
    "jdk.crypto.ec",
    "jdk.zipfs",
    "jdk.naming.dns",
    "jdk.security.auth",
    "jdk.security.jgss",
)


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def _folder_parts(folder: Path) -> list[bytes]:
    return [
        str(p.relative_to(folder)).encode() + b"\0" + p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


# -- the host's JDK ------------------------------------------------------------------------
def java_home() -> Path:
    """The JDK whose `jlink` and `jmods` make the image's runtime (JAVA_HOME or `java` on PATH)."""
    candidates = [os.environ.get("JAVA_HOME", "")]
    java = shutil.which("java")
    if java:
        candidates.append(str(Path(java).resolve().parents[1]))
    for candidate in filter(None, candidates):
        home = Path(candidate)
        if (home / "bin" / "jlink").is_file() and (home / "jmods" / "java.base.jmod").is_file():
            return home
    raise TestenvError(
        "the bundled Kafka image needs a JDK with jlink and jmods (Java 17+): "
        "apt-get install openjdk-17-jdk-headless, or set JAVA_HOME"
    )


def _jlink(home: Path, target: Path) -> None:
    proc = subprocess.run(
        [
            str(home / "bin" / "jlink"),
            "--add-modules",
            ",".join(JRE_MODULES),
            "--strip-debug",
            "--no-man-pages",
            "--no-header-files",
            "--compress=2",
            "--output",
            str(target),
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise TestenvError(f"jlink failed: {proc.stderr.strip() or proc.stdout.strip()}")


# -- contexts and images -------------------------------------------------------------------------
def _stage(ctx: Context, name: str, key: str, fill: Callable[[Path], None]) -> Path:
    """<cache>/images/<name>-context-<key>/: the Dockerfile folder plus what `fill` adds."""
    target = ctx.cache / "images" / f"{name}-context-{key}"

    def make(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob(f"{name}-context-*"):
            shutil.rmtree(old, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{name}-") as tmp:
            staging = Path(tmp) / "context"
            shutil.copytree(IMAGES_DIR / name, staging)
            fill(staging)
            staging.rename(path)

    return cached(ctx, target, f"image-{name}", make)


def _in_node(ctx: Context, ref: str) -> bool:
    socket = image.containerd_socket_or_fail(ctx)
    proc = subprocess.run(
        ["ctr", "--address", str(socket), "-n", "k8s.io", "images", "ls", "-q", f"name==docker.io/{ref}"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _ensure(
    ctx: Context, name: str, repository: str, version: str, key: str, fill: Callable[[Path], None]
) -> str:
    ref = f"{repository}:{version}-{key}"
    if _in_node(ctx, ref):
        say(f"{ref} is already on the node")
        return ref
    context = _stage(ctx, name, key, fill)
    image.build(ctx, str(context / "Dockerfile"), ref)
    return ref


def ensure_kafka(ctx: Context) -> str:
    """Kafka from testenv's jars and a jlink'ed runtime; returns the image reference."""
    libs = kafka.install(ctx)
    home = java_home()
    jars = sorted(libs.glob("*.jar"))
    key = _digest(
        [
            *_folder_parts(IMAGES_DIR / "kafka"),
            "\n".join(f"{j.name} {j.stat().st_size}" for j in jars).encode(),
            (home / "release").read_bytes() if (home / "release").is_file() else str(home).encode(),
            ",".join(JRE_MODULES).encode(),
        ]
    )

    def fill(staging: Path) -> None:
        (staging / "libs").mkdir()
        for jar in jars:
            shutil.copy2(jar, staging / "libs" / jar.name)
        say(f"cutting a Java runtime from {home} with jlink (~20 s, once)")
        _jlink(home, staging / "jre")

    return _ensure(ctx, "kafka", KAFKA_REPOSITORY, kafka.VERSION, key, fill)


def ensure_ferretdb(ctx: Context) -> str:
    """FerretDB (the MongoDB protocol on SQLite) from testenv's binary; returns the reference."""
    binary = ferretdb.install(ctx)
    key = _digest([*_folder_parts(IMAGES_DIR / "ferretdb"), file_sha256(binary).encode()])

    def fill(staging: Path) -> None:
        shutil.copy2(binary, staging / "ferretdb")

    return _ensure(ctx, "ferretdb", FERRETDB_REPOSITORY, ferretdb.VERSION.lstrip("v"), key, fill)


def chart_values(ctx: Context) -> dict[str, object]:
    """The chart values (`helm install -f`) running both bundled services from these images."""
    kafka_ref, ferretdb_ref = ensure_kafka(ctx), ensure_ferretdb(ctx)

    def image_of(ref: str) -> dict[str, str]:
        repository, _, tag = ref.rpartition(":")
        return {"repository": repository, "tag": tag, "pullPolicy": "Never"}

    return {
        "kafka": {"bundled": {"enabled": True, "image": image_of(kafka_ref), "kafkaHome": "/opt/kafka"}},
        "mongodb": {
            "bundled": {
                "enabled": True,
                "image": image_of(ferretdb_ref),
                "command": ["/ferretdb"],
                "args": [
                    "--handler=sqlite",
                    "--sqlite-url=file:/data/db/",
                    "--state-dir=/data/db",
                    "--listen-addr=:27017",
                    "--debug-addr=127.0.0.1:8088",
                    "--telemetry=disable",
                ],
                "runAsUser": 1000,
            }
        },
    }
