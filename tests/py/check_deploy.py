"""Checks that the files under deploy/ agree with each other and with the repository.

Schemas are checked elsewhere (kubernetes-validate, check-jsonschema, hadolint; see
scripts/test); this checks what no schema knows: ports, names, paths and bounds that two files
must share. Usage: check_deploy.py [REPO]. Prints one line per failed check and exits 1 if any.
"""

import pathlib
import re
import sys
import tomllib

import yaml

FAILURES: list[str] = []


def check(condition: bool, what: str) -> None:
    if not condition:
        FAILURES.append(what)


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    if not match:
        raise ValueError(f"unsupported duration {duration!r}")
    value, unit = int(match[1]), match[2]
    return value / 1000 if unit == "ms" else value * (60 if unit == "m" else 1)


def load_all(path: pathlib.Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def check_k8s(deploy: pathlib.Path) -> None:
    k8s = deploy / "k8s"
    manifests = sorted(p.name for p in k8s.glob("*.yaml") if p.name != "kustomization.yaml")
    objects = {}
    for name in manifests:
        for doc in load_all(k8s / name):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc

    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    for name in listed:
        check((k8s / name).is_file(), f"kustomization.yaml lists {name}, which does not exist")
    for name in manifests:
        check(
            name in listed or name.endswith(".example.yaml"),
            f"k8s/{name} is in neither kustomization.yaml nor an .example.yaml",
        )

    deployment = objects[("Deployment", "streamgate")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    configmap_volume = next(v for v in spec["volumes"] if "configMap" in v)
    configmap = objects[("ConfigMap", configmap_volume["configMap"]["name"])]
    (item,) = configmap_volume["configMap"]["items"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == configmap_volume["name"])
    config_path = f"{mount['mountPath']}/{item['path']}"
    check(
        container["args"] == ["--config", config_path],
        f"the container's args should be --config {config_path}",
    )
    config = tomllib.loads(configmap["data"][item["key"]])

    server = config["server"]
    check(port(server["listen"]) == ports["grpc"], "[server] listen is not the grpc containerPort")
    check(
        port(config["telemetry"]["metrics_listen"]) == ports["metrics"],
        "[telemetry] metrics_listen is not the metrics containerPort",
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check(
            container[probe].get("grpc", {}).get("port") == ports["grpc"],
            f"{probe} is not a gRPC probe on the grpc port",
        )
    check(
        not config["auth"]["public"] or "grpc.health.v1.Health" in config["auth"]["public"],
        "the kubelet's gRPC probes need grpc.health.v1.Health in [auth] public",
    )

    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + 2 * seconds(server.get("drain_timeout", "10s")) + 10
    check(
        spec["terminationGracePeriodSeconds"] > needed,
        f"terminationGracePeriodSeconds must exceed preStop + 2 x drain_timeout + 10 s ({needed})",
    )

    secret = objects[("Secret", "streamgate-secrets")]
    env = {e["name"]: e for e in container["env"]}
    for variable in env.values():
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["name"] == secret["metadata"]["name"], f"{variable['name']}: unknown Secret")
            check(
                ref["key"] in secret["stringData"],
                f"{variable['name']}: key {ref['key']} missing from secret.example.yaml",
            )
    jwt_env = config["auth"].get("jwt", {}).get("hs256_secret_env")
    if jwt_env:
        check(jwt_env in env, f"[auth.jwt] hs256_secret_env {jwt_env} is not in the container env")
    # Replicas share one PostgreSQL: each must sign page tokens with the same key.
    page_env = config["auth"].get("page_token_key_env", "STREAMGATE_PAGE_TOKEN_KEY")
    check(page_env in env, f"[auth] page_token_key_env {page_env} is not in the container env")
    if any(p["kind"] == "aliyun-vod" and "access_key_id" not in p for p in config["providers"]):
        for name in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
            check(name in env, f"an aliyun-vod provider needs {name} in the container env")

    selector = deployment["spec"]["selector"]["matchLabels"]
    check(selector.items() <= labels.items(), "the Deployment's selector misses its pod labels")
    for kind, name in objects:
        doc = objects[(kind, name)]
        if kind == "Service":
            check(doc["spec"]["selector"].items() <= labels.items(), f"Service {name}: selector")
            for service_port in doc["spec"]["ports"]:
                check(
                    service_port["targetPort"] in ports,
                    f"Service {name}: targetPort {service_port['targetPort']} is no container port",
                )
        if kind == "PodDisruptionBudget":
            check(
                doc["spec"]["selector"]["matchLabels"].items() <= labels.items(),
                f"PodDisruptionBudget {name}: selector",
            )
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            check(
                (target["kind"], target["name"]) == ("Deployment", "streamgate"),
                f"HorizontalPodAutoscaler {name}: scaleTargetRef",
            )
            check(
                doc["spec"]["minReplicas"] >= deployment["spec"]["replicas"] >= 3,
                f"HorizontalPodAutoscaler {name}: minReplicas below the Deployment's replicas",
            )
    check(
        spec["serviceAccountName"] in {n for k, n in objects if k == "ServiceAccount"},
        "the Deployment's ServiceAccount is not defined",
    )


def check_compose(deploy: pathlib.Path) -> None:
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    services = compose["services"]
    gateway = services["streamgate"]
    build = gateway["build"]
    check(
        (deploy / build["context"] / build["dockerfile"]).resolve() == deploy / "Dockerfile",
        "compose: streamgate is not built from deploy/Dockerfile",
    )
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                check((deploy / source).exists(), f"compose: {source} does not exist")
    mounts = dict(v.split(":")[:2][::-1] for v in gateway["volumes"])
    config_path = gateway["command"][1]
    check(config_path in mounts, f"compose: nothing is mounted at {config_path}")
    config = tomllib.loads((deploy / mounts[config_path]).read_text())
    published = {int(p.rsplit(":", 1)[1]) for p in gateway["ports"]}
    check(port(config["server"]["listen"]) in published, "compose: the gRPC port is not published")
    endpoint = gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    check(
        re.fullmatch(r"http://([a-z-]+):4317", endpoint)[1] in services,
        "compose: OTEL_EXPORTER_OTLP_ENDPOINT names no service",
    )
    store_host = re.match(r"postgres://[^@]*@([a-z-]+):", config["store"]["url"])[1]
    check(store_host in services, "compose: the store URL names no service")

    collector = yaml.safe_load((deploy / "otel-collector.yaml").read_text())
    for signal, pipeline in collector["service"]["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                check(
                    component in collector.get(section, {}),
                    f"otel-collector.yaml: {signal} uses undefined {section[:-1]} {component}",
                )
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    check(jaeger in services, "otel-collector.yaml: the trace exporter names no compose service")


def check_dockerfile(repo: pathlib.Path) -> None:
    deploy = repo / "deploy"
    dockerfile = (deploy / "Dockerfile").read_text()
    allowed = [
        line[1:].rstrip("/")
        for line in (deploy / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for match in re.finditer(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        for source in match[1].split():
            check((repo / source).exists(), f"Dockerfile: COPY {source}: no such path")
            check(source in allowed, f"Dockerfile: COPY {source}: excluded by the .dockerignore")
    binary = re.search(r"^COPY --from=build /out/streamgate (\S+)$", dockerfile, re.MULTILINE)[1]
    check(f'ENTRYPOINT ["{binary}"]' in dockerfile, "Dockerfile: ENTRYPOINT is not the binary")
    check(
        f'CMD ["{binary}", "probe"' in dockerfile,
        "Dockerfile: HEALTHCHECK does not run streamgate probe",
    )
    for source in ("build.rs", "Cargo.lock", ".cargo"):
        check(source in allowed, f"Dockerfile.dockerignore: {source} must be in the context")


def main() -> int:
    repo = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    check_k8s(repo / "deploy")
    check_compose(repo / "deploy")
    check_dockerfile(repo)
    for failure in FAILURES:
        print(f"deploy: {failure}")
    if not FAILURES:
        print("deploy: the manifests, compose, collector and Dockerfile agree")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
