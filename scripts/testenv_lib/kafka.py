"""Apache Kafka, one KRaft node (broker + controller), from its jars on Maven Central.

The jars are resolved once per version with `mvn dependency:copy-dependencies` of a
throw-away pom into the cache. Each `up` of a stopped broker starts from an empty,
freshly formatted data directory in the run directory (tests use fresh topic
prefixes; nothing is worth keeping, and a killed run's lock or half-written log can't
get in the way). Two client listeners: HOST on 127.0.0.1 for host clients, POD on
HOST_IP for pods; the controller listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import shutil
import socket
import struct
import uuid
from pathlib import Path

from . import network
from .common import (
    HOST_IP,
    Context,
    TestenvError,
    cmdline,
    crash_daemon,
    daemon_alive,
    ensure_debian_packages,
    free_port,
    kill_stray,
    pid_of,
    require_disk,
    require_tool,
    run,
    say,
    start_daemon,
    stop_daemon,
    wait_until,
)

NAME = "kafka"
VERSION = "4.1.1"
SCALA = "2.13"
# Kafka 4 logs through slf4j 1.7 → log4j2; the binding is not a dependency of the jars.
LOG4J = "2.24.3"
# A test session creates thousands of partitions (a topic prefix per test); 512m ran out.
HEAP = "1536m"
START_TIMEOUT = 90.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flowkit.testenv</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-storage</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


# -- installation -------------------------------------------------------------------
def _require_java(ctx: Context) -> None:
    if shutil.which("java") is None:
        ensure_debian_packages(ctx, ["openjdk-17-jre-headless"], f"Kafka {VERSION} runs on Java 17+")
    require_tool("java", "Kafka needs Java 17+: apt-get install openjdk-17-jre-headless")
    out = run(["java", "-version"]).stderr
    try:
        version = out.split('"')[1]
        major = int(version.split(".")[0])
    except (IndexError, ValueError):
        return
    if major < 17:
        raise TestenvError(
            f"Kafka {VERSION} needs Java 17+, found {version}: apt-get install openjdk-17-jre-headless"
        )


def libs_dir(ctx: Context) -> Path:
    return ctx.cache / "kafka" / VERSION / "libs"


def install(ctx: Context) -> Path:
    """Resolve the jars into the cache once; later calls return at once."""
    libs = libs_dir(ctx)
    done = libs.parent / ".complete"
    if done.exists():
        return libs
    if shutil.which("mvn") is None:
        ensure_debian_packages(ctx, ["maven"], f"resolving Kafka {VERSION}'s jars")
    require_tool("mvn", "resolving Kafka's jars needs Maven: apt-get install maven")
    require_disk(ctx.cache, 0.5, f"Kafka {VERSION}'s jars")
    say(f"kafka: resolving Apache Kafka {VERSION} jars from Maven Central (once)")
    work = libs.parent
    shutil.rmtree(libs, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "pom.xml").write_text(_POM.format(version=VERSION, scala=SCALA, log4j=LOG4J))
    log = ctx.logfile("kafka-install")
    run(
        [
            "mvn",
            "-B",
            "-q",
            f"-Dmaven.repo.local={ctx.cache / 'maven-repo'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cwd=work,
        log=log,
        timeout=900,
    )
    if not any(libs.glob(f"kafka_{SCALA}-{VERSION}.jar")):
        raise TestenvError(f"mvn finished but kafka_{SCALA}-{VERSION}.jar is missing from {libs}", log)
    done.touch()
    return libs


# -- readiness: a Metadata request over the wire ------------------------------------------
def _request(host: str, port: int, api_key: int, version: int, body: bytes) -> bytes:
    client = b"flowkit-testenv"
    header = struct.pack(">hhih", api_key, version, 1, len(client)) + client
    payload = header + body
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        return _recv_exact(sock, size)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def broker_count(host: str, port: int) -> int:
    """Unfenced brokers in a Metadata v4 response (0 while starting or on error)."""
    try:
        # topics: empty array (no topic metadata), allow_auto_topic_creation: false
        response = _request(host, port, 3, 4, struct.pack(">ib", 0, 0))
    except (OSError, struct.error):
        return 0
    # correlation_id, throttle_time_ms, brokers array length
    _, _, brokers = struct.unpack_from(">iii", response, 0)
    return max(int(brokers), 0)


def ready(host: str, port: int) -> bool:
    return broker_count(host, port) >= 1


# -- the broker -----------------------------------------------------------------------
def _home(ctx: Context) -> Path:
    return ctx.run / "kafka"


def _config(ctx: Context, ports: dict[str, int]) -> str:
    data = _home(ctx) / "data"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{ports['controller']}",
            f"listeners=HOST://127.0.0.1:{ports['host']},POD://{HOST_IP}:{ports['pod']},"
            f"CONTROLLER://127.0.0.1:{ports['controller']}",
            f"advertised.listeners=HOST://127.0.0.1:{ports['host']},POD://{HOST_IP}:{ports['pod']}",
            "listener.security.protocol.map=HOST:PLAINTEXT,POD:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=HOST",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]
    )


def _ports(ctx: Context) -> dict[str, int] | None:
    ports = ctx.get("kafka.ports")
    return {str(k): int(v) for k, v in ports.items()} if isinstance(ports, dict) else None


def _pick_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values())) < 3:
        ports = {"host": free_port(), "pod": free_port(HOST_IP), "controller": free_port()}
    return ports


def _running(ctx: Context) -> bool:
    pid = pid_of(ctx, NAME)
    return daemon_alive(ctx, NAME) and pid is not None and "kafka.Kafka" in cmdline(pid)


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _java(libs: Path, home: Path, *args: str) -> list[str]:
    return [
        "java",
        f"-Xmx{HEAP}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        f"{libs}/*",
        *args,
    ]


def up(ctx: Context) -> None:
    network.ensure(ctx)
    _require_java(ctx)
    libs = install(ctx)
    ports = _ports(ctx)
    if _running(ctx) and ports and ready("127.0.0.1", ports["host"]):
        return
    home = _home(ctx)
    config = home / "server.properties"
    stop_daemon(ctx, NAME)
    kill_stray(str(config))  # a broker of a killed run whose pid file was lost
    shutil.rmtree(home / "data", ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    require_disk(ctx.run, 0.5, "Kafka's data directory")
    ports = _pick_ports()
    config.write_text(_config(ctx, ports))
    (home / "log4j2.properties").write_text(_LOG4J2)
    log = ctx.logfile(NAME)
    run(
        _java(libs, home, "kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(config)),
        log=log,
        timeout=120,
    )
    ctx.put("kafka.ports", ports)
    _start(ctx, libs, home, ports)


def _start(ctx: Context, libs: Path, home: Path, ports: dict[str, int]) -> None:
    log = ctx.logfile(NAME)
    start_daemon(ctx, NAME, _java(libs, home, "kafka.Kafka", str(home / "server.properties")), cwd=home)
    what = f"Kafka on 127.0.0.1:{ports['host']}"
    wait_until(lambda: ready("127.0.0.1", ports["host"]), START_TIMEOUT, what, log, NAME, ctx)
    wait_until(lambda: ready(HOST_IP, ports["pod"]), 20, f"Kafka on {HOST_IP}:{ports['pod']}", log, NAME, ctx)


def restart(ctx: Context) -> None:
    """Kill the broker as a crash would, then start it again with the same ports and data
    (for tests of what clients do while it is away)."""
    ports = _ports(ctx)
    if ports is None or not _running(ctx):
        raise TestenvError("kafka is not running: `scripts/testenv up kafka` first")
    crash_daemon(ctx, NAME)
    _start(ctx, install(ctx), _home(ctx), ports)


def down(ctx: Context) -> None:
    home = _home(ctx)
    stop_daemon(ctx, NAME, timeout=20)
    kill_stray(str(home / "server.properties"))
    shutil.rmtree(home / "data", ignore_errors=True)
    ctx.forget("kafka.ports")


def status(ctx: Context) -> str:
    ports = _ports(ctx)
    if not _running(ctx) or ports is None:
        return "stopped"
    state = "ready" if ready("127.0.0.1", ports["host"]) else "NOT ANSWERING"
    return f"{state}, pid {pid_of(ctx, NAME)}, 127.0.0.1:{ports['host']} (pods: {HOST_IP}:{ports['pod']})"


def env(ctx: Context) -> dict[str, str]:
    ports = _ports(ctx)
    if not _running(ctx) or ports is None:
        return {}
    return {
        "FLOWKIT_TEST_KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['host']}",
        "FLOWKIT_TEST_KAFKA_BOOTSTRAP_POD": f"{HOST_IP}:{ports['pod']}",
    }
