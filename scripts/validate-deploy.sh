#!/usr/bin/env bash
# Checks the deployment files offline, without a Kubernetes cluster, Docker or the network:
#
# - the Kubernetes manifests of deploy/k8s against the Kubernetes JSON schemas, with
#   kubernetes-validate (the version pinned in scripts/ensure-deps.sh, which bundles the
#   schemas), in strict mode (an unknown or misspelt field fails) and for each Kubernetes
#   version of K8S_VERSIONS below; a resource of an unknown kind or API version fails too;
# - what the schemas cannot see: every selector matches its pods, named ports exist, the
#   drain fits in the grace period, the etcd members' --initial-cluster and the nodes'
#   ACTORMESH_ETCD name the StatefulSet's pods, pods meet the "restricted" Pod Security
#   Standard, images are pinned, kustomization.yaml lists every manifest;
# - with kubectl on the PATH, the kustomize render (kubectl kustomize) validated again;
# - deploy/Dockerfile, statically: base images pinned by tag, the builder on the workspace's
#   Rust version, the exact build command, a numeric non-root user, the ports, STOPSIGNAL.
#
#   scripts/validate-deploy.sh                   installs kubernetes-validate if missing
#                                                (scripts/ensure-deps.sh --deploy, needs
#                                                PyPI), then checks deploy/k8s
#   scripts/validate-deploy.sh --offline         never installs: fails if it is missing
#   scripts/validate-deploy.sh --manifests DIR   checks the manifests in DIR instead
#
# Exits 0 when everything passes, 1 with the reasons otherwise, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes versions the manifests must be valid for: the oldest one supported here and
# the newest the pinned kubernetes-validate bundles.
K8S_VERSIONS=("1.33.0" "1.37.0")
K8S_VALIDATE_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/actormesh/venv-k8s"
KUBERNETES_VALIDATE_VERSION=$(sed -n 's/^KUBERNETES_VALIDATE_VERSION="\(.*\)"$/\1/p' scripts/ensure-deps.sh)
DOCKERFILE=deploy/Dockerfile

manifests=deploy/k8s
offline=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --offline) offline=1 ;;
        --manifests)
            [ "$#" -ge 2 ] || { echo "validate-deploy: --manifests needs a directory" >&2; exit 2; }
            manifests=$2
            shift
            ;;
        -h | --help)
            sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "validate-deploy: unknown argument: $1 (expected --offline or --manifests DIR)" >&2
            exit 2
            ;;
    esac
    shift
done

say() { echo "validate-deploy: $*" >&2; }
failures=()
fail() {
    say "FAIL: $*"
    failures+=("$*")
}

if [ -z "$KUBERNETES_VALIDATE_VERSION" ]; then
    say "no KUBERNETES_VALIDATE_VERSION=\"...\" line in scripts/ensure-deps.sh"
    exit 1
fi
if [ ! -d "$manifests" ] || [ ! -f "$manifests/kustomization.yaml" ]; then
    say "$manifests is not a directory with a kustomization.yaml"
    exit 2
fi

# --- the validator -------------------------------------------------------------------------
validator="$K8S_VALIDATE_VENV/bin/kubernetes-validate"
python="$K8S_VALIDATE_VENV/bin/python"
installed_version() {
    { "$validator" --version 2>/dev/null || true; } | awk '{print $NF}'
}
if [ "$(installed_version)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
    if [ "$offline" -eq 1 ]; then
        say "kubernetes-validate $KUBERNETES_VALIDATE_VERSION is not installed in $K8S_VALIDATE_VENV (found: $(installed_version | grep . || echo nothing)): run scripts/ensure-deps.sh --etcd (or --deploy), which installs it from PyPI"
        exit 1
    fi
    ./scripts/ensure-deps.sh --deploy
fi

# --- the manifests against the schemas ----------------------------------------------------
mapfile -t files < <(find "$manifests" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
if [ "${#files[@]}" -eq 0 ]; then
    say "no manifest (*.yaml) in $manifests"
    exit 1
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# validate LABEL FILE...: every resource of the files valid for every Kubernetes version. A
# resource of an unknown kind or API version is only a warning for kubernetes-validate (it has
# no schema for it): here it fails.
validate() {
    local label=$1 version out
    shift
    for version in "${K8S_VERSIONS[@]}"; do
        if ! out=$("$validator" --strict --quiet -k "$version" "$@" 2>&1); then
            fail "$label is not valid for Kubernetes $version:"
            printf '%s\n' "$out" >&2
        elif [ -n "$out" ]; then
            fail "$label: kubernetes-validate warns for Kubernetes $version:"
            printf '%s\n' "$out" >&2
        fi
    done
}

validate "$manifests" "${files[@]}"

# --- what the schemas cannot see ----------------------------------------------------------
if ! "$python" - "$manifests" "$DOCKERFILE" <<'PY'; then
import os
import re
import sys

import yaml

manifests, dockerfile = sys.argv[1], sys.argv[2]
problems = []


def problem(where, what):
    problems.append(f"{where}: {what}")


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


kustomization = load(os.path.join(manifests, "kustomization.yaml"))[0]
files = sorted(
    f for f in os.listdir(manifests) if f.endswith(".yaml") and f != "kustomization.yaml"
)
listed = kustomization.get("resources", [])
for f in files:
    if f not in listed:
        problem("kustomization.yaml", f"{f} is not in resources")
for f in listed:
    if f not in files:
        problem("kustomization.yaml", f"resource {f} does not exist")

docs = []  # (file, resource)
for f in files:
    for d in load(os.path.join(manifests, f)):
        docs.append((f, d))


def name(d):
    return f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"


namespace = kustomization.get("namespace")
if not any(d.get("kind") == "Namespace" and d["metadata"]["name"] == namespace for _, d in docs):
    problem("kustomization.yaml", f"namespace {namespace!r} is not defined by any manifest")

workloads = [(f, d) for f, d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
services = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "Service"}


def pod_labels(d):
    return d["spec"]["template"]["metadata"].get("labels", {})


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected(selector):
    return [d for _, d in workloads if matches(selector, pod_labels(d))]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


for f, d in workloads:
    where = f"{f} {name(d)}"
    spec = d["spec"]
    if not matches(spec["selector"].get("matchLabels", {}), pod_labels(d)):
        problem(where, "spec.selector does not match the pod template's labels")
    pod = spec["template"]["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(where, "no RuntimeDefault seccompProfile (restricted Pod Security Standard)")
    if pod.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken is not false")
    annotations = spec["template"]["metadata"].get("annotations", {})
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        cwhere = f"{where} container {c['name']}"
        csc = c.get("securityContext", {})
        if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problem(cwhere, "not runAsNonRoot")
        if csc.get("allowPrivilegeEscalation") is not False:
            problem(cwhere, "allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problem(cwhere, "readOnlyRootFilesystem is not true")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(cwhere, "capabilities do not drop ALL")
        image = c.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            problem(cwhere, f"image {image!r} is not pinned to a tag")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problem(cwhere, f"no resources.{kind}.{r}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe not in c:
                problem(cwhere, f"no {probe}")
                continue
            port = c[probe].get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                problem(cwhere, f"{probe} port {port!r} is not a named container port")
        if annotations.get("prometheus.io/scrape") == "true":
            if int(annotations.get("prometheus.io/port", "0")) not in ports.values():
                problem(where, "prometheus.io/port is not a container port")
    if d["kind"] == "StatefulSet":
        headless = services.get(spec.get("serviceName"))
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problem(where, f"serviceName {spec.get('serviceName')!r} is not a headless Service")
        for c in pod["containers"]:
            for arg in c.get("args", []) + c.get("command", []):
                if arg.startswith("--initial-cluster="):
                    members = [m.split("=", 1)[0] for m in arg.split("=", 1)[1].split(",")]
                    want = [f"{d['metadata']['name']}-{i}" for i in range(spec["replicas"])]
                    if members != want:
                        problem(where, f"--initial-cluster names {members}, the pods are {want}")
                    for m in arg.split("=", 1)[1].split(","):
                        member, url = m.split("=", 1)
                        if not url.startswith(f"http://{member}.{spec['serviceName']}."):
                            problem(where, f"--initial-cluster: {url} is not {member}'s stable name")

# The nodes: etcd endpoints, the drain within the grace period, the admin probes.
statefulsets = {d["metadata"]["name"]: d for _, d in workloads if d["kind"] == "StatefulSet"}
for f, d in workloads:
    if d["kind"] != "Deployment":
        continue
    where = f"{f} {name(d)}"
    pod = d["spec"]["template"]["spec"]
    for c in pod["containers"]:
        env = env_of(c)
        if "ACTORMESH_ETCD" not in env:
            continue
        for endpoint in env["ACTORMESH_ETCD"].split(","):
            m = re.fullmatch(r"https?://([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):2379", endpoint.strip())
            sts = statefulsets.get(m.group(1)) if m else None
            if not (sts and sts["spec"]["serviceName"] == m.group(3)
                    and int(m.group(2)) < sts["spec"]["replicas"]):
                problem(where, f"ACTORMESH_ETCD endpoint {endpoint!r} is no etcd member's stable name")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        drain = int(env.get("DRAIN_TIMEOUT") or 0)
        pre_stop = c.get("lifecycle", {}).get("preStop", {})
        sleep = pre_stop.get("sleep", {}).get("seconds", 0)
        command = pre_stop.get("exec", {}).get("command", [])
        if len(command) == 2 and command[0].endswith("sleep"):
            sleep = int(command[1])
        if not drain:
            problem(where, "no DRAIN_TIMEOUT")
        if not sleep:
            problem(where, "no preStop sleep before the drain")
        if sleep + drain >= grace:
            problem(where, f"preStop {sleep} s + DRAIN_TIMEOUT {drain} s >= terminationGracePeriodSeconds {grace}")
        admin = {p["name"]: p["containerPort"] for p in c["ports"]}.get("admin")
        if admin is None or not env.get("ADMIN", "").endswith(f":{admin}"):
            problem(where, "ADMIN does not listen on the admin container port")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") != "admin":
                problem(where, f"{probe} is not GET {path} on the admin port")

for f, d in docs:
    where = f"{f} {name(d)}"
    kind = d.get("kind")
    if kind == "Service" and not d["spec"].get("selector"):
        problem(where, "no selector")
    if kind == "Service" and d["spec"].get("selector"):
        targets = selected(d["spec"]["selector"])
        if not targets:
            problem(where, "the selector matches no workload's pods")
        names = {
            p.get("name")
            for t in targets
            for c in t["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for p in d["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                problem(where, f"targetPort {p['targetPort']!r} is not a named port of its pods")
    if kind in ("PodDisruptionBudget", "NetworkPolicy"):
        selector = (d["spec"].get("selector") or d["spec"].get("podSelector") or {}).get("matchLabels", {})
        if not selected(selector):
            problem(where, "the selector matches no workload's pods")
    if kind == "NetworkPolicy":
        for rule in d["spec"].get("ingress", []) + d["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                peer_selector = peer.get("podSelector", {}).get("matchLabels")
                if peer_selector and not selected(peer_selector):
                    problem(where, f"peer podSelector {peer_selector} matches no workload's pods")

# deploy/Dockerfile: the numeric user it runs as is the pods' runAsUser.
with open(dockerfile) as f:
    users = re.findall(r"^USER\s+(\d+)", f.read(), re.M)
for f, d in workloads:
    run_as = d["spec"]["template"]["spec"].get("securityContext", {}).get("runAsUser")
    images = [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]
    if any(i.startswith("actormesh/") for i in images) and [str(run_as)] != users[-1:]:
        problem(f"{f} {name(d)}", f"runAsUser {run_as} is not the Dockerfile's USER {users[-1:]}")

for p in problems:
    print(f"validate-deploy: FAIL: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
    failures+=("the checks of $manifests beyond the schemas")
fi

# --- the kustomize render -----------------------------------------------------------------
if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize "$manifests" >"$scratch/rendered.yaml" 2>"$scratch/kustomize.err"; then
        validate "kubectl kustomize $manifests" "$scratch/rendered.yaml"
    else
        fail "kubectl kustomize $manifests failed:"
        cat "$scratch/kustomize.err" >&2
    fi
    rendered="kustomize render checked"
else
    say "kubectl is not on the PATH: the kustomize render was not checked (kustomization.yaml's resources and namespace were)"
    rendered="kustomize render not checked (no kubectl)"
fi

# --- deploy/Dockerfile, statically (no hadolint here) ------------------------------------
rust_version=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
stages=()
while read -r line; do
    # FROM [--platform=...] <image> [AS <stage>]; a FROM of an earlier stage is not an image
    # to pin.
    image=$(awk '{for (i = 2; i <= NF; i++) if ($i !~ /^--/) {print $i; exit}}' <<<"$line")
    stage=$(awk '{for (i = 2; i < NF; i++) if (tolower($i) == "as") print $(i + 1)}' <<<"$line")
    is_stage=0
    for s in ${stages[@]+"${stages[@]}"}; do [ "$s" = "$image" ] && is_stage=1; done
    [ -n "$stage" ] && stages+=("$stage")
    [ "$is_stage" -eq 1 ] && continue
    ref=${image%@*}
    tag=${ref##*/}
    case "$tag" in
        *:*) tag=${tag#*:} ;;
        *) tag="" ;;
    esac
    if [ -z "$tag" ] || [ "$tag" = "latest" ]; then
        fail "$DOCKERFILE: FROM $image is not pinned to a tag"
    fi
done < <(grep -iE '^FROM[[:space:]]' "$DOCKERFILE")
builder=$(grep -iE '^FROM[[:space:]]' "$DOCKERFILE" | grep -oE '[[:space:]]rust:[^[:space:]]+' | head -n 1 | tr -d '[:space:]' || true)
if [ -z "$builder" ]; then
    fail "$DOCKERFILE: no rust:<version> builder stage"
elif [[ "$builder" != "rust:$rust_version-"* && "$builder" != "rust:$rust_version" ]]; then
    fail "$DOCKERFILE: the builder is $builder, the workspace's rust-version is $rust_version (Cargo.toml)"
fi
grep -qE 'cargo build --release --locked -p actormesh-examples --bin cluster_service' "$DOCKERFILE" \
    || fail "$DOCKERFILE: no 'cargo build --release --locked -p actormesh-examples --bin cluster_service'"
grep -q 'protobuf-compiler' "$DOCKERFILE" || fail "$DOCKERFILE: protobuf-compiler (protoc) is not installed in the builder"
user=$(grep -E '^USER[[:space:]]' "$DOCKERFILE" | tail -n 1 | awk '{print $2}')
if ! [[ "${user%%:*}" =~ ^[0-9]+$ ]] || [ "${user%%:*}" -eq 0 ]; then
    fail "$DOCKERFILE: the last USER ($user) is not a numeric non-root uid"
fi
for port in 7100 8080 9100; do
    grep -qE "^EXPOSE[[:space:]].*\\b$port\\b" "$DOCKERFILE" || fail "$DOCKERFILE: port $port is not EXPOSEd"
done
grep -qE '^STOPSIGNAL[[:space:]]+SIGTERM' "$DOCKERFILE" || fail "$DOCKERFILE: no STOPSIGNAL SIGTERM"
grep -qE '^ENTRYPOINT[[:space:]]+\[' "$DOCKERFILE" || fail "$DOCKERFILE: no exec-form ENTRYPOINT"
grep -qE '^(\*\*/)?target/?$' .dockerignore 2>/dev/null || fail ".dockerignore: target is not excluded from the build context"
grep -qE '^\.git/?$' .dockerignore 2>/dev/null || fail ".dockerignore: .git is not excluded from the build context"

if [ "${#failures[@]}" -gt 0 ]; then
    say "${#failures[@]} check(s) failed (see above)"
    exit 1
fi
say "ok: ${#files[@]} manifests of $manifests valid (kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict, Kubernetes ${K8S_VERSIONS[*]}), $rendered, $DOCKERFILE pinned to $builder"
