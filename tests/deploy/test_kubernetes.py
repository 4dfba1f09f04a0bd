"""deploy/kubernetes: every object valid against Kubernetes' own schemas, and the invariants that
make a replica safe to run there (grace period vs config, probe paths, non-root, read-only root FS,
the spool on the pod's own volume, flags the CLI really has).

Rendering: ``tests/deploy/kustomize_lite.py`` always (no tool needed); ``kubectl kustomize`` too when
``kubectl`` is installed, and the two must agree. The ServiceMonitor is a CRD, not in the schemas
``kubernetes-validate`` ships: it is checked structurally (selector, port, path).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from proxy.app import create_app
from proxy.cli import build_parser
from proxy.config import NAMED_ENV, ConfigError, load_settings
from proxy.settings import Settings
from tests.deploy import kustomize_lite
from tests.deploy.kustomize_lite import strip_hash

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
TREES = {"base": KUBE / "base", "overlay": KUBE / "overlays" / "example"}
# The oldest Kubernetes still in upstream support when this was written, and the newest the
# package ships: a field removed or added in between shows up here.
VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
UID = 10001  # the Dockerfile's `meter` user

Doc = dict[str, Any]


def _render(tree: str) -> list[Doc]:
    return kustomize_lite.render(TREES[tree])


@pytest.fixture(scope="module", params=sorted(TREES))
def docs(request: pytest.FixtureRequest) -> list[Doc]:
    return _render(request.param)


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def _pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if "template" in d.get("spec", {})
    ]


def _settings_from(docs: list[Doc], tmp_path: Path) -> Settings:
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    return load_settings(config_path=str(path), environ={})


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    docs: list[Doc], version: str
) -> None:
    validated = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
        validated += 1
    assert validated >= 9


def test_the_validator_rejects_a_broken_object(docs: list[Doc]) -> None:
    """So the test above can fail: a typo'd field and a wrong type are both refused."""
    sts = copy.deepcopy(_one(docs, "StatefulSet"))
    sts["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 50
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, VERSIONS[-1], strict=True)
    sts = copy.deepcopy(_one(docs, "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, VERSIONS[-1], strict=True)


def test_service_monitor_scrapes_the_metrics_path_of_the_client_service(docs: list[Doc]) -> None:
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if not monitors:
        assert docs is not None  # the base leaves it to the prometheus-operator component
        return
    (sm,) = monitors
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    selected = [
        s
        for s in docs
        if s["kind"] == "Service"
        and sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["openai-meter"]
    ports = {p["name"] for p in selected[0]["spec"]["ports"]}
    paths = _app_paths()
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {
            "port",
            "path",
            "interval",
            "scrapeTimeout",
            "scheme",
            "bearerTokenSecret",
        }
        assert endpoint["port"] in ports
        token = endpoint["bearerTokenSecret"]  # /metrics carries spend: scraped with the token
        (secret,) = [
            d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == token["name"]
        ]
        assert (
            token["key"] == "OPENAI_METER_METRICS__TOKEN" and token["key"] in secret["stringData"]
        )
        assert endpoint["path"] in paths
        assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return int(match.group(1))


# --- invariants --------------------------------------------------------------------------------


def _app_paths() -> set[str]:
    app = create_app(Settings())  # routes are added at build time; nothing is opened
    return {r.canonical for r in app.router.resources()}


def grace_problems(docs: list[Doc], settings: Settings) -> list[str]:
    """terminationGracePeriodSeconds must cover the preStop pause + shutdown_grace_s + a drain."""
    problems = []
    sts = _one(docs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "openai-meter"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    if command[0] != "sleep" or not command[1].isdigit():
        problems.append(f"preStop is not a plain pause: {command}")
        return problems
    pause = int(command[1])
    if pause < 5:
        problems.append(f"preStop pause {pause}s is too short for endpoint removal to propagate")
    # + time to drain the ledger writer, + the last OpenTelemetry export when it is on
    otel = settings.otel.timeout_s if settings.otel.enabled else 0.0
    needed = pause + settings.server.shutdown_grace_s + 5 + otel
    if spec["terminationGracePeriodSeconds"] < needed:
        problems.append(
            f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} < preStop "
            f"{pause} + server.shutdown_grace_s {settings.server.shutdown_grace_s} + 5 "
            f"+ otel.timeout_s {otel}"
        )
    return problems


def probe_problems(docs: list[Doc], paths: set[str]) -> list[str]:
    problems = []
    sts = _one(docs, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe_name, want in expected.items():
        probe = container.get(probe_name)
        if probe is None:
            problems.append(f"no {probe_name}")
            continue
        get = probe["httpGet"]
        if get["path"] != want:
            problems.append(f"{probe_name} on {get['path']}, not {want}")
    for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container.get(probe_name, {}).get("httpGet")
        if get is None:
            continue
        if get["path"] not in paths:
            problems.append(f"{probe_name} path {get['path']} is not a route of the app")
        if get["port"] not in port_names:
            problems.append(f"{probe_name} port {get['port']} is not a named container port")
    return problems


def security_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for where, spec in _pod_specs(docs):
        pod = spec.get("securityContext", {})
        if pod.get("runAsNonRoot") is not True or pod.get("runAsUser", 0) == 0:
            problems.append(f"{where}: pod may run as root")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token it never uses")
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container.get("securityContext", {})
            name = f"{where}/{container['name']}"
            if sc.get("runAsUser", pod.get("runAsUser", 0)) == 0:
                problems.append(f"{name}: runs as root")
            if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
                problems.append(f"{name}: runAsNonRoot not set")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: root file system is writable")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation not false")
            if sc.get("privileged"):
                problems.append(f"{name}: privileged")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}: capabilities not dropped")
            if "memory" not in container.get("resources", {}).get("limits", {}):
                problems.append(f"{name}: no memory limit")
            if not container.get("resources", {}).get("requests"):
                problems.append(f"{name}: no resource requests")
    return problems


def spool_problems(docs: list[Doc], settings: Settings) -> list[str]:
    """The spool and the per-record journal (``<spool_dir>/journal-*.jsonl``) sit on the pod's own
    PersistentVolumeClaim, and the journal is on."""
    sts = _one(docs, "StatefulSet")
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    if not settings.ledger.journal:
        return ["ledger.journal is off: a killed replica would lose the records in its memory"]
    spool = Path(settings.ledger.spool_dir)
    if not spool.is_absolute():
        return [f"ledger.spool_dir {spool} is relative (the image's workdir is not a volume here)"]
    for mount in container["volumeMounts"]:
        if mount["name"] in claims and spool.is_relative_to(mount["mountPath"]):
            return []
    return [f"ledger.spool_dir {spool} is not on a volumeClaimTemplate mount"]


def cli_problems(docs: list[Doc]) -> list[str]:
    problems = []
    parser = build_parser()
    for where, spec in _pod_specs(docs):
        for container in spec["containers"]:
            args = container.get("args", [])
            if container.get("command"):
                problems.append(f"{where}: overrides the image's entrypoint")
            try:
                parsed = parser.parse_args(args)
            except SystemExit:
                problems.append(f"{where}: openai-meter {' '.join(args)} does not parse")
                continue
            if parsed.command == "serve" and not parsed.no_db_upgrade:
                problems.append(f"{where}: replicas must start with --no-db-upgrade")
    commands = {
        tuple(c.get("args", [])[:2]) for _, spec in _pod_specs(docs) for c in spec["containers"]
    }
    if ("db", "upgrade") not in commands:
        problems.append("no migration Job runs `openai-meter db upgrade`")
    return problems


def wiring_problems(docs: list[Doc]) -> list[str]:
    """Names that must agree: selectors, the HPA target, the Secret's keys, the ConfigMap."""
    problems = []
    sts = _one(docs, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    if "replicas" in sts["spec"]:
        problems.append("StatefulSet sets replicas: every apply would fight the HPA")
    if not sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append("StatefulSet selector does not match its pods")
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in (d for d in docs if d["kind"] == kind):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            if not selector.items() <= pod_labels.items():
                problems.append(f"{kind}/{doc['metadata']['name']} selects no replica")
    headless = _one(docs, "Service", sts["spec"]["serviceName"])
    if headless["spec"].get("clusterIP") != "None":
        problems.append("the StatefulSet's serviceName is not a headless Service")
    ref = _one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    if (ref["kind"], ref["name"]) != ("StatefulSet", sts["metadata"]["name"]):
        problems.append(f"HPA scales {ref}, not the StatefulSet")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for where, spec in _pod_specs(docs):
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                secret = secrets.get(source["secretRef"]["name"])
                if secret is None:
                    problems.append(f"{where}: Secret {source['secretRef']['name']} missing")
                    continue
                unknown = [k for k in secret["stringData"] if not _is_setting_env(k)]
                if unknown:
                    problems.append(f"Secret keys the proxy does not read: {sorted(unknown)}")
        for volume in spec.get("volumes", []):
            if "configMap" in volume and volume["configMap"]["name"] not in config_maps:
                problems.append(f"{where}: ConfigMap {volume['configMap']['name']} missing")
    return problems


def _is_setting_env(name: str) -> bool:
    """An environment variable the proxy reads as a setting (named, or OPENAI_METER_A__B)."""
    if name in NAMED_ENV:
        return True
    if not name.startswith("OPENAI_METER_") or "__" not in name:
        return False
    try:
        load_settings(environ={name: "x"})
    except ConfigError as exc:
        return "unknown config key" not in str(exc)
    return True


CHECKS: dict[str, Callable[[list[Doc], Settings], list[str]]] = {
    "grace": grace_problems,
    "probes": lambda docs, _: probe_problems(docs, _app_paths()),
    "security": lambda docs, _: security_problems(docs),
    "spool": spool_problems,
    "cli": lambda docs, _: cli_problems(docs),
    "wiring": lambda docs, _: wiring_problems(docs),
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_invariants_hold(docs: list[Doc], check: str, tmp_path: Path) -> None:
    settings = _settings_from(docs, tmp_path)
    assert CHECKS[check](docs, settings) == []


def _sts_container(docs: list[Doc]) -> Doc:
    container: Doc = _one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    return container


def _pod(docs: list[Doc]) -> Doc:
    spec: Doc = _one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def _edit_config(docs: list[Doc], path: tuple[str, ...], value: Any) -> None:
    data = _one(docs, "ConfigMap")["data"]
    config = yaml.safe_load(data["config.yaml"])
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    data["config.yaml"] = yaml.safe_dump(config)


MUTATIONS: dict[str, tuple[str, Callable[[list[Doc]], None]]] = {
    "grace too short": ("grace", lambda d: _pod(d).update(terminationGracePeriodSeconds=35)),
    "no preStop pause": (
        "grace",
        lambda d: _sts_container(d)["lifecycle"]["preStop"]["exec"].update(command=["sleep", "0"]),
    ),
    "probe on a missing path": (
        "probes",
        lambda d: _sts_container(d)["readinessProbe"]["httpGet"].update(path="/ready"),
    ),
    "liveness on readyz": (
        "probes",
        lambda d: _sts_container(d)["livenessProbe"]["httpGet"].update(path="/readyz"),
    ),
    "root user": ("security", lambda d: _pod(d)["securityContext"].update(runAsUser=0)),
    "writable root": (
        "security",
        lambda d: _sts_container(d)["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "spool on tmp": (
        "spool",
        lambda d: [
            m.update(name="tmp") for m in _sts_container(d)["volumeMounts"] if m["name"] == "state"
        ],
    ),
    "journal off": ("spool", lambda d: _edit_config(d, ("ledger", "journal"), False)),
    "migrating replicas": (
        "cli",
        lambda d: _sts_container(d)["args"].remove("--no-db-upgrade"),
    ),
    "unknown flag": ("cli", lambda d: _sts_container(d)["args"].append("--threads=2")),
    "hpa on a Deployment": (
        "wiring",
        lambda d: _one(d, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"].update(
            kind="Deployment"
        ),
    ),
    "secret key nobody reads": (
        "wiring",
        lambda d: _one(d, "Secret")["stringData"].update(OPENAI_METER_DB_URL="x"),
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_invariant_catches_what_it_guards(mutation: str, tmp_path: Path) -> None:
    check, mutate = MUTATIONS[mutation]
    docs = _render("base")
    settings = _settings_from(docs, tmp_path)
    assert CHECKS[check](docs, settings) == []
    mutate(docs)
    assert CHECKS[check](docs, _settings_from(docs, tmp_path)) != []


def test_a_longer_shutdown_grace_in_config_needs_a_longer_termination_grace(
    tmp_path: Path,
) -> None:
    docs = _render("base")
    settings = _settings_from(docs, tmp_path)
    longer = settings.model_copy(
        update={"server": settings.server.model_copy(update={"shutdown_grace_s": 60.0})}
    )
    assert grace_problems(docs, longer) != []
    slow_otel = settings.model_copy(
        update={"otel": settings.otel.model_copy(update={"enabled": True, "timeout_s": 30.0})}
    )
    assert grace_problems(docs, slow_otel) != []
    default_otel = settings.model_copy(
        update={"otel": settings.otel.model_copy(update={"enabled": True})}
    )
    assert grace_problems(docs, default_otel) == []  # the base leaves room for turning it on


def test_secret_keys_are_settings_the_proxy_reads() -> None:
    assert _is_setting_env("OPENAI_METER_METRICS__TOKEN")
    assert _is_setting_env("OPENAI_METER_DATABASE_URL")
    assert not _is_setting_env("OPENAI_METER_METRICS__TOKENN")
    assert not _is_setting_env("OPENAI_METER_DB_URL")
    assert not _is_setting_env("DATABASE_URL")


def test_config_files_are_valid_settings_and_match_the_dockerfile_user(tmp_path: Path) -> None:
    for tree in TREES:
        settings = _settings_from(_render(tree), tmp_path)
        assert settings.listen.host == "0.0.0.0"  # reachable by the Service
        assert settings.admin.token is None  # from the Secret, never in the ConfigMap
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"--uid {UID} meter" in dockerfile and "\nUSER meter\n" in dockerfile
    for docs in (_render(t) for t in TREES):
        for _, spec in _pod_specs(docs):
            assert spec["securityContext"]["runAsUser"] == UID


def test_overlay_changes_what_it_says_and_keeps_the_rest() -> None:
    base, overlay = _render("base"), _render("overlay")
    assert {d["metadata"].get("namespace") for d in overlay if d["kind"] != "Namespace"} == {
        "openai-meter"
    }
    assert _one(overlay, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3
    container = _sts_container(overlay)
    assert container["image"] == "registry.example.com/platform/openai-meter:0.1.0"
    assert container["resources"]["requests"]["cpu"] == "1"
    # strategic merge kept what the patch did not mention
    assert container["args"] == _sts_container(base)["args"]
    assert container["securityContext"] == _sts_container(base)["securityContext"]
    kinds = {d["kind"] for d in overlay} - {d["kind"] for d in base}
    assert kinds == {"Namespace", "ServiceMonitor"}


# --- the real kustomize --------------------------------------------------------------------------


def _normalised(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    """Objects by (kind, name) with generated-name hashes removed (kustomize_lite's differ)."""
    text = yaml.safe_dump_all(docs)
    text = re.sub(r"(openai-meter-config)-[a-z0-9]{10}", r"\1", text)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(text) if d}


@pytest.mark.parametrize("tree", sorted(TREES))
def test_kubectl_kustomize_renders_the_same_objects(tree: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: kustomize_lite alone rendered the manifests")
    result = subprocess.run(
        [kubectl, "kustomize", str(TREES[tree])], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    real = _normalised([d for d in yaml.safe_load_all(result.stdout) if d])
    lite = _normalised(_render(tree))
    assert sorted(real) == sorted(lite)
    for key in real:
        assert real[key] == lite[key], key
    for doc in yaml.safe_load_all(result.stdout):
        if doc and doc["kind"] == "ConfigMap":
            assert strip_hash(doc["metadata"]["name"]) != doc["metadata"]["name"]
