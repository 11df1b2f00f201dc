"""The Helm chart helm/flowkit with the real helm binary: lint, template, the values schema,
and the CRDs it ships being exactly crds/. (The rendered manifests on the real API server:
tests/cluster/test_chart_dry_run.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "flowkit"
MODES = {"external": CHART / "ci" / "external-values.yaml", "bundled": CHART / "ci" / "bundled-values.yaml"}
CONTRACT_ENV = {
    "FLOWKIT_KAFKA_BOOTSTRAP",
    "FLOWKIT_MONGO_URL",
    "FLOWKIT_TOPIC_PREFIX",
    "FLOWKIT_OPERATOR_NAMESPACES",
    "FLOWKIT_OPERATOR_WORKER_IMAGE",
    "FLOWKIT_OPERATOR_WORKER_IMAGE_PULL_POLICY",
    "FLOWKIT_OPERATOR_MONGO_SECRET",
    "FLOWKIT_OPERATOR_MONGO_SECRET_KEY",
    "FLOWKIT_OPERATOR_HEALTH_PORT",
}


class Helm(Protocol):
    major: int

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]: ...


def helm_runner(helm: str, home: Path) -> Helm:
    """helm with its caches and config in ``home``."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([helm, *args], capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    helm_run = cast(Helm, run)
    helm_run.major = int(run("version", "--short").stdout.strip().lstrip("v").split(".")[0])
    return helm_run


@pytest.fixture
def run_helm(any_helm: str, tmp_path: Path) -> Helm:
    """Helm 4, then Helm 3: the chart supports both."""
    return helm_runner(any_helm, tmp_path)


@pytest.fixture
def run_helm4(helm: str, tmp_path: Path) -> Helm:
    """Helm 4 alone: Helm 3's ``install --dry-run=client`` wants a cluster even so."""
    return helm_runner(helm, tmp_path)


def render(run_helm: Helm, *args: str) -> list[dict[str, Any]]:
    out = run_helm("template", "demo", str(CHART), "--namespace", "flowkit", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }


def test_the_chart_ships_the_crds_of_crds_unchanged() -> None:
    source = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_bytes() for p in (CHART / "crds").iterdir()}
    assert source, "crds/ holds no CRD"
    assert shipped == source, "helm/flowkit/crds/ differs from crds/: run scripts/sync-crds"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_helm_lint_is_clean(run_helm: Helm, mode: str) -> None:
    proc = run_helm("lint", "--strict", str(CHART), "-f", str(MODES[mode]))
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_helm_lint_with_no_choices_asks_for_kafka_and_mongodb(run_helm: Helm) -> None:
    proc = run_helm("lint", str(CHART), check=False)
    assert proc.returncode != 0
    if run_helm.major == 3:
        assert "kafka.bootstrap: String length must be greater than or equal to 1" in proc.stdout
        assert "mongodb.bundled.enabled: mongodb.bundled.enabled does not match: true" in proc.stdout
    else:
        assert "at '/kafka/bootstrap': minLength: got 0, want 1" in proc.stdout
        assert "at '/mongodb/bundled/enabled': value must be true" in proc.stdout


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        (
            "external",
            {"ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding", "Deployment", "FlowWorkerPool"},
        ),
        (
            "bundled",
            {
                "ServiceAccount",
                "Secret",
                "ConfigMap",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Service",
                "Deployment",
                "StatefulSet",
                "FlowWorkerPool",
            },
        ),
    ],
)
def test_helm_template_renders_the_objects_of_each_mode(run_helm: Helm, mode: str, kinds: set[str]) -> None:
    docs = render(run_helm, "-f", str(MODES[mode]))
    assert {d["kind"] for d in docs} == kinds


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_pod_is_locked_down(run_helm: Helm, mode: str) -> None:
    specs = pod_specs(render(run_helm, "-f", str(MODES[mode])))
    assert len(specs) == (1 if mode == "external" else 3)
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name


def test_the_operator_runs_flowkit_operator_with_the_contract_env_and_probes(run_helm: Helm) -> None:
    docs = render(run_helm, "-f", str(MODES["external"]), "--set", "image.tag=1.2.3")
    [deployment] = by_kind(docs, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["flowkit-operator"]
    assert container["image"] == "flowkit:1.2.3"
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == CONTRACT_ENV
    assert env["FLOWKIT_KAFKA_BOOTSTRAP"]["value"] == "kafka.example.internal:9092"
    assert env["FLOWKIT_MONGO_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "demo-flowkit-mongodb-url", "key": "url"}
    }
    assert env["FLOWKIT_OPERATOR_MONGO_SECRET"]["value"] == "demo-flowkit-mongodb-url"
    assert env["FLOWKIT_OPERATOR_WORKER_IMAGE"]["value"] == "flowkit:1.2.3"
    assert env["FLOWKIT_OPERATOR_NAMESPACES"]["value"] == ""
    assert env["FLOWKIT_TOPIC_PREFIX"]["value"] == "ci."
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]


def test_the_image_tag_defaults_to_the_app_version(run_helm: Helm) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    [deployment] = by_kind(render(run_helm, "-f", str(MODES["external"])), "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"flowkit:{app_version}"


def test_an_existing_secret_is_referenced_and_no_secret_is_made(run_helm: Helm) -> None:
    docs = render(
        run_helm,
        "-f",
        str(MODES["external"]),
        "--set",
        "mongodb.url=,mongodb.existingSecret=mongo-creds,mongodb.existingSecretKey=uri",
    )
    assert by_kind(docs, "Secret") == []
    [deployment] = by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FLOWKIT_MONGO_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mongo-creds", "key": "uri"}
    assert (
        env["FLOWKIT_OPERATOR_MONGO_SECRET"]["value"],
        env["FLOWKIT_OPERATOR_MONGO_SECRET_KEY"]["value"],
    ) == (
        "mongo-creds",
        "uri",
    )


def test_the_secret_holds_the_given_url(run_helm: Helm) -> None:
    import base64

    [secret] = by_kind(render(run_helm, "-f", str(MODES["external"])), "Secret")
    assert (
        base64.b64decode(secret["data"]["url"]).decode()
        == "mongodb://flowkit:secret@mongo.example.internal:27017/flowkit"
    )


def test_bundled_mode_points_everything_at_the_bundled_services(run_helm: Helm) -> None:
    import base64

    docs = render(run_helm, "-f", str(MODES["bundled"]))
    [secret] = by_kind(docs, "Secret")
    assert (
        base64.b64decode(secret["data"]["url"]).decode()
        == "mongodb://demo-flowkit-mongodb.flowkit.svc:27017/flowkit"
    )
    specs = pod_specs(docs)
    env = {e["name"]: e.get("value") for e in specs["demo-flowkit-operator"]["containers"][0]["env"]}
    assert env["FLOWKIT_KAFKA_BOOTSTRAP"] == "demo-flowkit-kafka.flowkit.svc:9092"
    assert env["FLOWKIT_OPERATOR_NAMESPACES"] == "flowkit-a,flowkit-b"
    [config] = by_kind(docs, "ConfigMap")
    assert (
        "advertised.listeners=PLAINTEXT://demo-flowkit-kafka.flowkit.svc:9092"
        in config["data"]["server.properties"]
    )
    kafka = specs["demo-flowkit-kafka"]["containers"][0]
    assert kafka["image"] == "apache/kafka:4.1.1"
    assert len(next(e["value"] for e in kafka["env"] if e["name"] == "KAFKA_CLUSTER_ID")) == 22
    mongo = specs["demo-flowkit-mongodb"]["containers"][0]
    assert (mongo["image"], mongo["command"]) == ("mongo:8.0", ["mongod"])


def test_bundled_images_and_command_come_from_values(run_helm: Helm) -> None:
    docs = render(
        run_helm,
        "-f",
        str(MODES["bundled"]),
        "--set",
        "mongodb.bundled.image.repository=local/ferretdb,mongodb.bundled.image.tag=1.24",
        "--set-json",
        'mongodb.bundled.command=["ferretdb"]',
        "--set-json",
        'mongodb.bundled.args=["--listen-addr=:27017","--handler=sqlite","--sqlite-url=file:/data/db/"]',
        "--set",
        "kafka.bundled.image.repository=local/kafka,kafka.bundled.image.tag=jars",
    )
    specs = pod_specs(docs)
    mongo = specs["demo-flowkit-mongodb"]["containers"][0]
    assert mongo["image"] == "local/ferretdb:1.24" and mongo["command"] == ["ferretdb"]
    assert mongo["args"][1] == "--handler=sqlite"
    assert specs["demo-flowkit-kafka"]["containers"][0]["image"] == "local/kafka:jars"


def test_persistence_uses_a_volume_claim(run_helm: Helm) -> None:
    docs = render(run_helm, "-f", str(MODES["bundled"]), "--set", "mongodb.bundled.persistence.enabled=true")
    sets = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "StatefulSet")}
    [claim] = sets["demo-flowkit-mongodb"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    assert "volumeClaimTemplates" not in sets["demo-flowkit-kafka"]


def _rules(role: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault(f"{group}/{resource}", set()).update(rule["verbs"])
    return out


def test_watching_all_namespaces_uses_one_cluster_role(run_helm: Helm) -> None:
    docs = render(run_helm, "-f", str(MODES["external"]))
    assert by_kind(docs, "Role") == [] and by_kind(docs, "RoleBinding") == []
    [role] = by_kind(docs, "ClusterRole")
    rules = _rules(role)
    assert rules["flowkit.io/flowtasks"] == {"get", "list", "watch", "patch", "update", "delete"}
    assert rules["flowkit.io/flowtasks/status"] == {"get", "patch", "update"}
    assert rules["apps/deployments"] == {"get", "list", "watch", "create", "patch", "update", "delete"}
    assert rules["/pods"] == {"get", "list", "watch"}
    assert rules["/namespaces"] == {"get", "list", "watch"}
    assert rules["apiextensions.k8s.io/customresourcedefinitions"] == {"get", "list", "watch"}
    assert "/secrets" not in rules and "*" not in str(role["rules"])
    [binding] = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "demo-flowkit", "namespace": "flowkit"}]


def test_watching_some_namespaces_uses_a_role_in_each(run_helm: Helm) -> None:
    docs = render(run_helm, "-f", str(MODES["bundled"]))
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["flowkit-a", "flowkit-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")) == [
        "flowkit-a",
        "flowkit-b",
    ]
    [cluster_role] = by_kind(docs, "ClusterRole")
    assert _rules(cluster_role) == {
        "apiextensions.k8s.io/customresourcedefinitions": {"get", "list", "watch"}
    }
    assert "/namespaces" not in _rules(by_kind(docs, "Role")[0])


def test_pools_from_values_become_flowworkerpools(run_helm: Helm) -> None:
    [pool] = by_kind(render(run_helm, "-f", str(MODES["bundled"])), "FlowWorkerPool")
    assert pool["metadata"]["namespace"] == "flowkit"
    assert pool["spec"] == {
        "roles": ["extractor", "transformer", "loader", "rates"],
        "handlers": "examples.etl.handlers:HANDLERS",
        "capacity": 2,
        "minReplicas": 0,
        "maxReplicas": 3,
        "env": [{"name": "EXTRA", "value": "1"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    }


def test_notes_tell_how_to_apply_and_watch_an_example(run_helm4: Helm) -> None:
    proc = run_helm4(
        "install", "demo", str(CHART), "-f", str(MODES["external"]), "--dry-run=client", "-n", "flowkit"
    )
    assert "kubectl -n flowkit get ft -w" in proc.stdout
    assert "kubectl -n flowkit wait --for=condition=Succeeded ft/etl" in proc.stdout


# Values, then how Helm 4 names the problem; Helm 3 (another JSON Schema library) in HELM3_SAYS.
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "pool-without-roles": (
        {"pools": [{"name": "p", "handlers": "m:H"}]},
        "at '/pools/0': missing property 'roles'",
    ),
    "pool-with-no-roles": (
        {"pools": [{"name": "p", "roles": [], "handlers": "m:H"}]},
        "at '/pools/0/roles': minItems: got 0, want 1",
    ),
    "pool-bad-handlers": (
        {"pools": [{"name": "p", "roles": ["r"], "handlers": "module.only"}]},
        "at '/pools/0/handlers': 'module.only' does not match pattern",
    ),
    "pool-unknown-key": (
        {"pools": [{"name": "p", "roles": ["r"], "handlers": "m:H", "replicas": 2}]},
        "at '/pools/0': additional properties 'replicas' not allowed",
    ),
    "pull-policy": ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy': value must be one of"),
    "kafka-both": (
        {"kafka": {"bundled": {"enabled": True}}},
        "at '/kafka/bootstrap': maxLength: got 27, want 0",
    ),
    "mongodb-url-and-secret": (
        {"mongodb": {"existingSecret": "creds"}},
        "at '/mongodb/existingSecret': maxLength",
    ),
    "mongodb-url-and-bundled": (
        {"mongodb": {"bundled": {"enabled": True}}},
        "at '/mongodb/bundled/enabled': value must be false",
    ),
    "mongodb-none": ({"mongodb": {"url": ""}}, "at '/mongodb/bundled/enabled': value must be true"),
    "unknown-top-level-key": ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
    "watch-namespace-name": ({"watchNamespaces": ["Not_A_Namespace"]}, "at '/watchNamespaces/0'"),
    "health-port-type": (
        {"operator": {"healthPort": "http"}},
        "at '/operator/healthPort': got string, want integer",
    ),
}


HELM3_SAYS = {
    "health-port-type": "operator.healthPort: Invalid type. Expected: integer, given: string",
    "kafka-both": "kafka.bootstrap: String length must be less than or equal to 0",
    "mongodb-none": "mongodb.bundled.enabled: mongodb.bundled.enabled does not match: true",
    "mongodb-url-and-bundled": "mongodb.bundled.enabled: mongodb.bundled.enabled does not match: false",
    "mongodb-url-and-secret": "mongodb.existingSecret: String length must be less than or equal to 0",
    "pool-bad-handlers": "pools.0.handlers: Does not match pattern",
    "pool-unknown-key": "pools.0: Additional property replicas is not allowed",
    "pool-with-no-roles": "pools.0.roles: Array must have at least 1 items",
    "pool-without-roles": "pools.0: roles is required",
    "pull-policy": "image.pullPolicy: image.pullPolicy must be one of the following",
    "unknown-top-level-key": "(root): Additional property replicaCount is not allowed",
    "watch-namespace-name": "watchNamespaces.0: Does not match pattern",
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_the_values_schema_refuses_bad_values(run_helm: Helm, tmp_path: Path, case: str) -> None:
    values, message = BAD_VALUES[case]
    if run_helm.major == 3:
        message = HELM3_SAYS[case]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    proc = run_helm(
        "template", "demo", str(CHART), "-f", str(MODES["external"]), "-f", str(path), check=False
    )
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "kafka.bundled.enabled=true",
            "set either kafka.bootstrap (an existing Kafka) or kafka.bundled.enabled=true, not both",
        ),
        (
            "kafka.bootstrap=",
            "set kafka.bootstrap (host:port of an existing Kafka) or kafka.bundled.enabled=true",
        ),
        (
            "mongodb.existingSecret=creds",
            "set exactly one of mongodb.url, mongodb.existingSecret and mongodb.bundled.enabled=true",
        ),
    ],
)
def test_without_the_schema_the_templates_still_refuse_an_ambiguous_choice(
    run_helm: Helm, setting: str, message: str
) -> None:
    proc = run_helm(
        "template",
        "demo",
        str(CHART),
        "-f",
        str(MODES["external"]),
        "--set",
        setting,
        "--skip-schema-validation",
        check=False,
    )
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_the_etl_example_task_is_the_etl_pipeline_and_its_pool_serves_every_role() -> None:
    pipeline = yaml.safe_load((REPO / "examples" / "etl" / "pipeline.yaml").read_text())
    folder = REPO / "examples" / "kubernetes"
    task = yaml.safe_load((folder / "etl-task.yaml").read_text())
    pool = yaml.safe_load((folder / "etl-pool.yaml").read_text())
    assert task["spec"]["graph"] == pipeline
    roles = {n["type"] for n in pipeline["nodes"] if n["type"] != "coordinator_fn"}
    assert set(pool["spec"]["roles"]) == roles
    assert pool["spec"]["handlers"] == "examples.etl.handlers:HANDLERS"


def test_the_example_tasks_are_valid_graphs_for_the_example_pool() -> None:
    from flowkit.graph import validate_graph

    folder = REPO / "examples" / "kubernetes"
    roles = yaml.safe_load((folder / "etl-pool.yaml").read_text())["spec"]["roles"]
    for name in ("etl-task.yaml", "etl-task-failing.yaml"):
        validate_graph(yaml.safe_load((folder / name).read_text())["spec"]["graph"], roles=roles)
