"""infra/ linted: what can be checked of the server shape's compose file, image, Helm values and manifests
without a Docker engine or a Kubernetes cluster (neither exists here; infra/OPERATIONS.md says what ran).

Each check is one a mistake in these files would fail: a reference to a service, variable, file,
Secret key or section that does not exist; a secret committed as a value; a port published beyond
loopback; a pool, version or package that disagrees with the rest of the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
PLACEHOLDER = "CHANGE-ME"
# names whose value is a secret, and names whose value is a URL that carries one
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING")
CARRIES_SECRET = re.compile(
    r"PASSWORD|SECRET|TOKEN|AUTH_STRING|BACKEND_STORE_URI|OPTUNA_STORAGE|COORDINATION_URL|ALERT_URLS"
)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]*:([^@\s]*)@")


def read(name: str) -> str:
    return (INFRA / name).read_text()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(read("compose.yaml"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env_file(name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The assignments of an env template: (set, commented out as optional)."""
    active, optional = {}, {}
    for line in read(name).splitlines():
        if match := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            active[match[1]] = match[2]
        elif match := re.fullmatch(r"# ([A-Z][A-Z0-9_]*)=(.*)", line):
            optional[match[1]] = match[2]
    return active, optional


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    files = [*sorted((INFRA / "k8s").glob("*.yaml")), INFRA / "k8s" / "secrets.yaml.example"]
    return [(f.name, doc) for f in files for doc in yaml.safe_load_all(f.read_text()) if doc is not None]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def deployment(name: str) -> dict[str, Any]:
    (found,) = [doc for _, doc in k8s_documents() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name]
    return found


def locked_packages() -> set[str]:
    lock = (REPO / "requirements.lock").read_text()
    return {m[1].lower() for m in re.finditer(r"^([A-Za-z0-9._-]+)==", lock, re.M)}


def locked_version(package: str) -> str:
    match = re.search(rf"^{re.escape(package)}==(\S+)", (REPO / "requirements.lock").read_text(), re.M)
    assert match, f"{package} is not in requirements.lock"
    return match[1]


# ---------------------------------------------------------------- compose.yaml


def test_compose_references_only_services_that_exist_and_waits_only_on_what_can_answer(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {"postgres", "redis", "minio", "prefect-api", "prefect-services", "mlflow", "worker"} <= set(services)
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on {needed}, which is no service"
            assert needed != name
            condition = how["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{name} waits for {needed} to be healthy: it has no check"
            elif condition == "service_completed_successfully":
                # a one-shot job: restarted, it would never complete and its dependants never start
                assert services[needed].get("restart") == "no", f"{needed} is waited on to finish but restarts"
            else:
                assert condition == "service_started"


def test_compose_publishes_only_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = []
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            assert isinstance(port, str), f"{name}: write ports as strings"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
            published.append(port)
    assert published == ["127.0.0.1:4200:4200", "127.0.0.1:5000:5000"]  # the two UIs, as compose.yaml says


def test_compose_declares_every_named_volume_it_mounts_and_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (INFRA / source).resolve().exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name} mounts the volume {source}, never declared"
                used.add(source)
    assert used == declared, f"declared but never mounted: {declared - used}"


def test_compose_builds_the_image_from_the_repository_with_infra_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["x-driftloop-image"]["build"]
    context = (INFRA / build["context"]).resolve()
    assert context == REPO
    assert (context / build["dockerfile"]).is_file()
    image_users = [name for name, s in compose["services"].items() if s.get("image") == "driftloop:local"]
    assert {"prefect-migrate", "prefect-api", "prefect-services", "mlflow", "worker"} == set(image_users)


def compose_variables() -> list[tuple[str, str | None]]:
    """Every ${NAME...} compose interpolates: (name, its operator and default or message). $$ is a literal $."""
    text = "\n".join(line for line in read("compose.yaml").splitlines() if not line.lstrip().startswith("#"))
    text = text.replace("$$", "")
    assert not re.search(r"\$[A-Za-z_]", text), "a bare $NAME: write ${NAME} (or $$ for the shell)"
    return [(m[1], m[2]) for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}", text)]


def test_every_compose_variable_is_in_the_env_template_or_has_a_default() -> None:
    active, optional = env_file("compose.env.example")
    variables = compose_variables()
    assert len(variables) > 20
    for name, operator in variables:
        if operator and operator.startswith(":-"):
            assert name not in active, f"{name} has a default in compose.yaml and a value in the template"
            assert name in optional, f"{name} (optional, default {operator[2:]!r}) is not in compose.env.example"
        else:
            assert name in active, f"compose.yaml needs {name}: compose.env.example does not set it"
            assert (operator or "").startswith(":?"), f"${{{name}}} should fail when unset: ${{{name}:?...}}"


def test_every_template_variable_is_one_compose_reads(services: dict[str, dict[str, Any]]) -> None:
    active, optional = env_file("compose.env.example")
    interpolated = {name for name, _ in compose_variables()}
    # `NAME:` with no value passes NAME from the env file only when it is set there
    passed_through = {k for s in services.values() for k, v in (s.get("environment") or {}).items() if v is None}
    assert set(active) <= interpolated, set(active) - interpolated
    assert set(optional) <= interpolated | passed_through, set(optional) - interpolated - passed_through


def test_the_env_template_commits_no_secret() -> None:
    active, optional = env_file("compose.env.example")
    secrets = {name: value for name, value in {**active, **optional}.items() if SECRET_NAME.search(name)}
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "DRIFTLOOP_S3_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD"} <= set(
        secrets
    )
    for name, value in secrets.items():
        assert value == "" or PLACEHOLDER in value, f"{name}={value!r} looks like a real secret"
    for name, value in {**active, **optional}.items():
        assert "$" not in value, name  # compose would expand it
        for password in CREDENTIALS_IN_URL.findall(value):
            assert password.startswith(PLACEHOLDER), name


def test_compose_passes_no_literal_secret(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if value is None:
                continue
            for password in CREDENTIALS_IN_URL.findall(str(value)):
                assert password.startswith("${"), f"{name}: {key} has a literal password"
            if SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is a literal"


def test_compose_names_only_driftloop_variables_the_code_reads(services: dict[str, dict[str, Any]]) -> None:
    for name in ("mlflow", "worker"):
        for key in services[name]["environment"]:
            if key.startswith("DRIFTLOOP_") and key != "DRIFTLOOP_MLFLOW_AUTH":  # read by the mlflow command itself
                assert read_by_code(key), f"compose's {name} sets {key}, which nothing in flows/ or tasks/ reads"


# ---------------------------------------------------------------- the image


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_copy_source_exists_and_the_build_context_lets_it_through() -> None:
    ignore = [line for line in read("Dockerfile.dockerignore").splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"  # nothing but what is let through: no .git, .venv, infra/compose.env
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    copies = [args.split() for op, args in dockerfile_instructions() if op == "COPY"]
    assert copies
    sources = set()
    for words in copies:
        assert not any(w.startswith("--from") for w in words)
        *paths, _destination = [w for w in words if not w.startswith("--")]
        for path in paths:
            assert (REPO / path).exists(), f"COPY {path}: not in the repository"
            assert path.rstrip("/") in allowed, f"COPY {path}: Dockerfile.dockerignore keeps it out of the context"
            sources.add(path.rstrip("/"))
    assert {"requirements.lock", "prefect.yaml", "flows", "tasks", "configs"} <= sources
    assert "." not in sources
    assert "infra" not in sources


def test_the_image_runs_the_python_the_lock_was_made_for_under_tini_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    (base,) = [args for op, args in instructions if op == "FROM"]
    assert base.startswith("python:3.11-")
    assert "--python-version 3.11" in (REPO / "requirements.lock").read_text()[:400]
    assert [args for op, args in instructions if op == "USER"] == ["driftloop"]
    assert [args for op, args in instructions if op == "ENTRYPOINT"] == ['["/usr/bin/tini", "-g", "--"]']
    assert any("--require-hashes -r requirements.lock" in args for op, args in instructions if op == "RUN")


def test_what_the_server_shape_imports_is_locked(services: dict[str, dict[str, Any]]) -> None:
    """infra/OPERATIONS.md, "Beyond what the code imports": each package the stack names is in requirements.lock."""
    text = read("compose.yaml") + read("helm/prefect-server-values.yaml")
    needed = set()
    if "prefect_redis." in text:
        needed.add("prefect-redis")
    if services["worker"]["environment"]["DRIFTLOOP_DATA_URI"].startswith("s3://"):
        needed.add("s3fs")
    if "--artifacts-destination s3://" in read("compose.yaml"):
        needed.add("boto3")  # MLflow's S3 artifact repository
    assert needed == {"prefect-redis", "s3fs", "boto3"}
    for package in needed:
        assert package in locked_packages(), f"{package}: not in requirements.lock"
        assert package in section(operations(), "Beyond what the code imports"), package


# ---------------------------------------------------------------- Helm values


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return yaml.safe_load(read("helm/prefect-server-values.yaml"))


def test_the_chart_runs_the_prefect_the_workers_run(helm: dict[str, Any]) -> None:
    tag = helm["global"]["prefect"]["image"]["prefectTag"]
    assert tag == f"{locked_version('prefect')}-python3.11", "server and workers must run the same Prefect"
    assert helm["backgroundServices"]["runAsSeparateDeployment"] is True
    assert helm["backgroundServices"]["messaging"]["broker"] == "prefect_redis.messaging"


def test_the_helm_values_hold_no_secret_and_name_the_secrets_of_the_template(helm: dict[str, Any]) -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                assert key not in ("password", "authString", "connectionString", "url"), f"{path}.{key}: a literal"
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{path}[{n}]")
        else:
            assert not CREDENTIALS_IN_URL.search(str(node)), path

    walk(helm, "")
    redis = helm["backgroundServices"]["messaging"]["redis"]
    docket = helm["backgroundServices"]["messaging"]["docket"]
    wanted = {
        (helm["externalDatabase"]["existingSecret"], helm["externalDatabase"]["connectionStringSecretKey"]),
        (redis["existingSecret"], redis["existingSecretPasswordKey"]),
        (docket["existingSecret"], docket["existingSecretKey"]),
        (helm["server"]["basicAuth"]["existingSecret"], "auth-string"),  # the chart's fixed key
    }
    templated = {(doc["metadata"]["name"], key) for _, doc in k8s_documents() if doc["kind"] == "Secret"
                 for key in doc["stringData"]}  # fmt: skip
    assert wanted <= templated, wanted - templated


# ---------------------------------------------------------------- Kubernetes manifests

KINDS = {("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Secret"), ("v1", "ConfigMap")}


def test_every_manifest_is_a_named_object_of_a_known_kind() -> None:
    documents = k8s_documents()
    assert {doc["kind"] for _, doc in documents} == {"Deployment", "Service", "Secret", "ConfigMap"}
    names = set()
    for file, doc in documents:
        assert (doc.get("apiVersion"), doc.get("kind")) in KINDS, file
        assert doc["metadata"]["name"], file
        assert "namespace" not in doc["metadata"], f"{file}: the namespace comes from `kubectl apply -n`"
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in names, key
        names.add(key)


def test_deployments_select_their_pods_and_services_reach_a_port_they_open() -> None:
    documents = [doc for _, doc in k8s_documents()]
    for doc in (d for d in documents if d["kind"] == "Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), doc["metadata"]["name"]
    for service in (d for d in documents if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        (target,) = [
            d for d in documents if d["kind"] == "Deployment"
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]  # fmt: skip
        ports = {p.get("name") for c in containers(target) for p in c["ports"]}
        ports |= {p["containerPort"] for c in containers(target) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, service["metadata"]["name"]


def test_every_secret_and_config_reference_resolves_and_no_secret_is_a_literal() -> None:
    documents = [doc for _, doc in k8s_documents()]
    keys = {
        (doc["kind"], doc["metadata"]["name"]): set(doc.get("stringData") or doc.get("data") or {})
        for doc in documents
        if doc["kind"] in ("Secret", "ConfigMap")
    }
    for doc in (d for d in documents if d["kind"] == "Deployment"):
        for container in containers(doc):
            for env in container["env"]:
                if "value" in env:
                    assert not CARRIES_SECRET.search(env["name"]), f"{env['name']} is a literal: use a secretKeyRef"
                    continue
                source = env["valueFrom"]
                for kind, ref in (("Secret", source.get("secretKeyRef")), ("ConfigMap", source.get("configMapKeyRef"))):
                    if ref is None:
                        continue
                    assert (kind, ref["name"]) in keys, f"{env['name']}: no {kind} {ref['name']}"
                    if not ref.get("optional"):
                        assert ref["key"] in keys[(kind, ref["name"])], (
                            f"{env['name']}: {ref['name']} has no {ref['key']}"
                        )
                    if CARRIES_SECRET.search(env["name"]):
                        assert kind == "Secret", f"{env['name']} comes from a ConfigMap"


def test_the_secret_template_holds_placeholders_only_and_config_maps_no_credentials() -> None:
    for file, doc in k8s_documents():
        if doc["kind"] == "Secret":
            assert file.endswith(".example"), f"{file}: Secrets belong in secrets.yaml.example (not applied by -f dir)"
            assert "data" not in doc, "stringData, so a placeholder reads as one"
            for key, value in doc["stringData"].items():
                assert PLACEHOLDER in value, f"{doc['metadata']['name']}.{key} looks like a real secret"
        else:
            text = yaml.safe_dump(doc)
            assert not CREDENTIALS_IN_URL.search(text), file
            assert PLACEHOLDER not in text, file


def test_the_worker_polls_the_pool_prefect_yaml_deploys_to_with_its_health_check() -> None:
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    worker = deployment("driftloop-worker")
    assert worker["spec"]["replicas"] == 2
    (container,) = containers(worker)
    assert "command" not in container, "command would replace the image's entrypoint (tini): use args"
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert {args[args.index("--pool") + 1]} == pools == {"driftloop"}
    assert args[args.index("--type") + 1] == "process"
    assert "--with-healthcheck" in args
    assert args[args.index("--install-policy") + 1] == "never"
    probe = container["livenessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", 8080)


def test_the_manifests_set_what_compose_sets(services: dict[str, dict[str, Any]]) -> None:
    for compose_name, k8s_name in (("worker", "driftloop-worker"), ("mlflow", "mlflow")):
        (container,) = containers(deployment(k8s_name))
        assert {env["name"] for env in container["env"]} == set(services[compose_name]["environment"]), k8s_name
    compose_worker = services["worker"]["command"]
    (worker,) = containers(deployment("driftloop-worker"))
    assert worker["args"] == compose_worker
    (mlflow,) = containers(deployment("mlflow"))
    assert mlflow["args"][:2] == ["sh", "-ec"]
    for line in (
        "--artifacts-destination s3://driftloop-artifacts/mlflow",
        "--app-name basic-auth",
        "exec mlflow server",
    ):
        assert line in mlflow["args"][2], line
        assert line in services["mlflow"]["command"][2], line
    assert "$(" not in mlflow["args"][2], "Kubernetes expands $(NAME) in args itself"


# ---------------------------------------------------------------- server.env.example, OPERATIONS.md


def read_by_code(name: str) -> bool:
    return any(name in path.read_text() for folder in ("flows", "tasks") for path in (REPO / folder).rglob("*.py"))


def test_server_env_sets_only_variables_something_reads() -> None:
    active, optional = env_file("server.env.example")
    for name in {**active, **optional}:
        assert name.startswith(("PREFECT_", "MLFLOW_")) or read_by_code(name), f"{name}: nothing reads it"
    assert "DRIFTLOOP_COORDINATION_URL" in active  # the cross-host promotion lock and history
    assert "DRIFTLOOP_AUDIT_DIR" not in active
    assert "DRIFTLOOP_LOCK_DIR" not in active
    for name, value in {**active, **optional}.items():
        for password in CREDENTIALS_IN_URL.findall(value):
            assert password == PLACEHOLDER, name


def test_server_env_names_every_variable_of_the_readmes_server_shape_table() -> None:
    readme = (REPO / "README.md").read_text()
    table = section(readme, "The server shape", level=3).split("**Workers.**")[0]
    named = set(re.findall(r"`((?:PREFECT|DRIFTLOOP|MLFLOW)_[A-Z_]+)`", table))
    assert "DRIFTLOOP_COORDINATION_URL" in named
    active, _ = env_file("server.env.example")
    assert named <= set(active), named - set(active)


def operations() -> str:
    return read("OPERATIONS.md")


def section(markdown: str, title: str, level: int = 2) -> str:
    marks = "#" * level
    match = re.search(rf"^{marks} {re.escape(title)}\n(.*?)(?=^#{{1,{level}}} |\Z)", markdown, re.M | re.S)
    assert match, f"no section {marks} {title}"
    return match[1]


def test_every_section_the_infra_files_point_at_exists() -> None:
    doc = operations()
    headings = set(re.findall(r"^#{2,3} (.+)$", doc, re.M))
    readme_headings = set(re.findall(r"^#{2,4} (.+)$", (REPO / "README.md").read_text(), re.M))
    files = [p for p in INFRA.rglob("*") if p.is_file()] + [REPO / "docs" / "security.md"]
    pointed = 0
    for path in files:
        text = path.read_text()
        text = " ".join(text.split())  # a title may wrap
        for title in re.findall(r'OPERATIONS\.md\)?, "([^"]+)"', text):
            assert title in headings, f'{path.relative_to(REPO)} points at OPERATIONS.md "{title}"'
            pointed += 1
        for title in re.findall(r'README: "([^"]+)"', text):
            assert title in readme_headings, f'{path.relative_to(REPO)} points at README "{title}"'
    assert pointed >= 6
    for title in ("Topology", "First start", "Backups", "Restore drill", "Upgrades", "Turning auth on", "Kubernetes",
                  "Beyond what the code imports", "What was run here and what was not"):  # fmt: skip
        assert title in headings, title


def test_every_repository_path_the_infra_files_name_exists() -> None:
    pattern = re.compile(r"(?<![\w/.-])((?:infra|tests|docs|flows|tasks|configs)/[\w./-]*[\w/])")
    for path in [p for p in INFRA.rglob("*") if p.is_file()]:
        for name in pattern.findall(path.read_text()):
            if name in ("infra/compose.env", "infra/server.env", "infra/k8s/secrets.yaml"):
                continue  # the filled-in copies, never committed
            assert (REPO / name).exists(), f"{path.relative_to(REPO)} names {name}, which does not exist"
