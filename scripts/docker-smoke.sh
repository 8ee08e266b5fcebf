#!/usr/bin/env bash
# scripts/docker-smoke.sh — build the CPU image, run it, and check it as a user would.
#
# Needs root (it starts a private Docker engine) and about 4 minutes the first time on a machine
# (a local python:3.11-slim base is made from Debian packages), under a minute after that.
#
# Phase 1 — ../shared/tools/docker-offline.sh (when present): private dockerd, local base image,
#   `docker build` of our Dockerfile, `docker run --network host`, probe of /v2/health/ready.
#   The tool removes its container, its image tag and the build cache when it ends, so the image
#   is also tagged $SMOKE_IMAGE (through the tool's BUILD_ARGS) and survives in the tool's data root.
#   Then the same for Dockerfile.cuda with CUDA_BASE set to the local Debian Python base: the
#   recipe is checked, the CUDA base image is not (it cannot be pulled here).
# Phase 2 — this script starts its own dockerd on that data root (the tool's has stopped) and,
#   against containers it runs itself (host network, bound to 127.0.0.1, read-only root fs,
#   no capabilities):
#   - image: size, non-root user, exposed ports, HEALTHCHECK, entrypoint;
#   - a rebuild after a code change (layer cache warm) and its time;
#   - start-to-ready time; the server is PID 1 and runs as UID 10001;
#   - tritonclient inference over gRPC (simple, mlp) and HTTP; /metrics families;
#   - Docker's HEALTHCHECK turns the container healthy;
#   - SIGTERM: exit status 0 within --exit-timeout-secs;
#   - the KServe runtime's args (deploy/kserve/clusterservingruntime.yaml) with one model mounted
#     at /mnt/models; and a user repository mounted at /models.
# Without the tool, phase 2 alone runs against the Docker engine the environment already has.
#
# Knobs (environment):
#   SMOKE_HTTP_PORT SMOKE_GRPC_PORT SMOKE_METRICS_PORT  host ports (host network) [three free ones]
#   SMOKE_EXIT_TIMEOUT_SECS [10]   --exit-timeout-secs given to the container
#   SMOKE_IMAGE [ortserve:smoke]   tag of the image under test
#   SMOKE_KEEP_IMAGE [0]           1 = keep the image in the data root afterwards
#   SMOKE_SKIP_REBUILD [0]         1 = skip the code-change rebuild measurement
#   SMOKE_CUDA_RECIPE [1]          0 = skip building Dockerfile.cuda's recipe on the Debian base
#   DOCKER_OFFLINE [../shared/tools/docker-offline.sh]  the tool
#   VERIFY_WORK [~/.cache/ortserve-docker-smoke]  the tool's work directory (data root, base image cache)
#   PYTHON [.venv/bin/python]      a Python with tritonclient (pip install -e '.[test]')
#   SMOKE_CONTEXT [repository root] build context (a copy of the tree, e.g. to try a change)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The tool lives beside the project checkout (../shared); a clean clone elsewhere finds it at the
# workplace's fixed path.
TOOL=${DOCKER_OFFLINE:-}
if [ -z "$TOOL" ]; then
  for candidate in "$ROOT/../shared/tools/docker-offline.sh" /work/shared/tools/docker-offline.sh; do
    if [ -f "$candidate" ]; then TOOL=$candidate; break; fi
  done
fi
EXIT_TIMEOUT_SECS=${SMOKE_EXIT_TIMEOUT_SECS:-10}
IMAGE=${SMOKE_IMAGE:-ortserve:smoke}
KEEP_IMAGE=${SMOKE_KEEP_IMAGE:-0}
SKIP_REBUILD=${SMOKE_SKIP_REBUILD:-0}
CUDA_RECIPE=${SMOKE_CUDA_RECIPE:-1}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
# Our own work directory for the tool (data root, base image cache), so that a docker-offline.sh
# run of someone else's on this machine never shares a data root with ours.
W=${VERIFY_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/ortserve-docker-smoke}
mkdir -p "$W"
exec 9>"$W/smoke.lock"
flock -w 900 9 || { echo "[smoke] another docker-smoke.sh holds $W/smoke.lock" >&2; exit 1; }
CONTEXT=$(cd "${SMOKE_CONTEXT:-$ROOT}" && pwd)
CNAME=ortserve-smoke
CHECKS=$ROOT/deploy/docker/smoke_checks.py

T0=$SECONDS
say() { echo "[smoke +$((SECONDS - T0))s] $*"; }
PASSED=0
passed() { PASSED=$((PASSED + 1)); say "$@"; }  # one check done
die() { echo "[smoke] FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

"$PYTHON" -c 'import tritonclient.grpc, tritonclient.http' 2>/dev/null \
  || die "$PYTHON lacks tritonclient: pip install -e '.[test]' first (or set PYTHON)"

# Three distinct free ports, held open together while they are chosen.
read -r FREE_HTTP FREE_GRPC FREE_METRICS < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
HTTP_PORT=${SMOKE_HTTP_PORT:-$FREE_HTTP}
GRPC_PORT=${SMOKE_GRPC_PORT:-$FREE_GRPC}
METRICS_PORT=${SMOKE_METRICS_PORT:-$FREE_METRICS}
port_in_use() { (ss -ltnH 2>/dev/null || true) | awk '{print $4}' | grep -qE "[:.]$1\$"; }
for p in "$HTTP_PORT" "$GRPC_PORT" "$METRICS_PORT"; do
  port_in_use "$p" && die "port $p is in use on this host (the container uses host networking); set SMOKE_*_PORT"
done

# The container binds 127.0.0.1 only and takes its ports from the environment (so that its
# HEALTHCHECK, which reads the same variables, probes the right port).
ENV_ARGS=(-e ORTSERVE_HOST=127.0.0.1 -e "ORTSERVE_HTTP_PORT=$HTTP_PORT" -e "ORTSERVE_GRPC_PORT=$GRPC_PORT"
          -e "ORTSERVE_METRICS_PORT=$METRICS_PORT" -e "ORTSERVE_EXIT_TIMEOUT_SECS=$EXIT_TIMEOUT_SECS")

# ------------------------------------------------------------------------------ phase 1: the tool
USE_TOOL=0
if [ -f "$TOOL" ]; then
  [ "$(id -u)" = 0 ] || die "docker-offline.sh needs root"
  USE_TOOL=1
  say "phase 1: $TOOL (build, run, probe /v2/health/ready)"
  TOOL_LOG=$(mktemp /tmp/ortserve-smoke-tool.XXXXXX.log)
  if ! PORT=$HTTP_PORT HEALTH_PATH=/v2/health/ready PROBE_TIMEOUT=120 \
       RUN_ARGS="${ENV_ARGS[*]}" BUILD_ARGS="-t $IMAGE --build-arg BUILDKIT_INLINE_CACHE=1" \
       VERIFY_WORK=$W bash "$TOOL" "$CONTEXT" "$CONTEXT/Dockerfile" >"$TOOL_LOG" 2>&1 9>&-; then
    tail -40 "$TOOL_LOG"
    die "docker-offline.sh failed (full log: $TOOL_LOG)"
  fi
  grep -E '^\[verify' "$TOOL_LOG" | sed 's/^/  /'
  PASSED=$((PASSED + 1))
  # Build time as the tool saw it (base image cached or not, our layers built from scratch).
  b0=$(sed -nE 's/^\[verify \+([0-9]+)s\] docker build .*/\1/p' "$TOOL_LOG")
  b1=$(sed -nE 's/^\[verify \+([0-9]+)s\] build OK.*/\1/p' "$TOOL_LOG")
  base_made=$(grep -c 'base image imported' "$TOOL_LOG" || true)
  BUILD_FIGURE="docker build (no layer cache): $((b1 - b0))s; tool total $(sed -nE 's/.*total runtime ([0-9]+)s.*/\1/p' "$TOOL_LOG")s"
  [ "$base_made" -gt 0 ] && BUILD_FIGURE="$BUILD_FIGURE, including the one-off base image"
  rm -f "$TOOL_LOG"
  if [ "$CUDA_RECIPE" = 1 ]; then
    # Dockerfile.cuda cannot be built here as written (no registry for nvidia/cuda). Its recipe
    # (requirements with onnxruntime-gpu, venv, user, entrypoint) is built on the local Debian
    # Python base instead, and must serve (onnxruntime-gpu falls back to the CPU without CUDA).
    say "phase 1b: Dockerfile.cuda's recipe on the Debian base (CUDA_BASE=python:3.11-slim-bookworm; the CUDA base itself is untested)"
    TOOL_LOG=$(mktemp /tmp/ortserve-smoke-tool.XXXXXX.log)
    if ! PORT=$HTTP_PORT HEALTH_PATH=/v2/health/ready PROBE_TIMEOUT=120 \
         RUN_ARGS="${ENV_ARGS[*]}" BUILD_ARGS="--build-arg CUDA_BASE=python:3.11-slim-bookworm" \
         VERIFY_WORK=$W bash "$TOOL" "$CONTEXT" "$CONTEXT/Dockerfile.cuda" >"$TOOL_LOG" 2>&1 9>&-; then
      tail -40 "$TOOL_LOG"
      die "Dockerfile.cuda recipe failed (full log: $TOOL_LOG)"
    fi
    ort=$(grep -oE 'onnxruntime-gpu-[0-9][0-9.]*[0-9]' "$TOOL_LOG" | head -1 || true)
    grep -E '^\[verify.*(build OK|PROBE OK)' "$TOOL_LOG" | sed 's/^/  /'
    passed "Dockerfile.cuda recipe: builds with ${ort:-onnxruntime-gpu} and serves (CPU fallback)"
    rm -f "$TOOL_LOG"
  fi
else
  say "no $TOOL: phase 2 only, against the Docker engine this environment has"
fi

# ------------------------------------------------------------------------------ phase 2: our checks
DPID=
TMP=$(mktemp -d /tmp/ortserve-smoke.XXXXXX)
cleanup() {
  rc=$?
  set +e
  if [ -n "${DOCKER:-}" ]; then
    for c in "$CNAME" "$CNAME-kserve" "$CNAME-repo"; do $DOCKER rm -f "$c" >/dev/null 2>&1; done
    if [ "$KEEP_IMAGE" != 1 ]; then
      $DOCKER rmi -f "$IMAGE" "$IMAGE-rebuild" >/dev/null 2>&1
      $DOCKER builder prune -af >/dev/null 2>&1
    fi
  fi
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -TERM "$DPID"
    for _ in $(seq 1 60); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$DPID" 2>/dev/null && kill -KILL "$DPID"
  fi
  mountpoint -q "$W/smoke-exec/netns/default" 2>/dev/null && umount "$W/smoke-exec/netns/default"
  rm -rf "$TMP"
  if [ $rc = 0 ]; then
    say "PASS (total ${SECONDS}s)"
    echo "docker-smoke: $PASSED passed, 0 failed"
  else
    echo "[smoke] FAILED (exit $rc)" >&2
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ $USE_TOOL = 1 ]; then
  # The tool's dockerd has stopped; ours uses the same data root (base image, $IMAGE) with its own
  # exec root and socket.
  DOCKER=/usr/bin/docker
  export DOCKER_HOST=unix://$W/smoke.sock
  mkdir -p "$W/smoke-exec"
  dockerd --data-root "$W/data" --exec-root "$W/smoke-exec" --host "$DOCKER_HOST" \
    --pidfile "$W/smoke-dockerd.pid" --storage-driver "${STORAGE_DRIVER:-overlay2}" \
    --bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
    >"$W/smoke-dockerd.log" 2>&1 9>&- &
  DPID=$!
  for _ in $(seq 1 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
  $DOCKER info >/dev/null 2>&1 || { tail -20 "$W/smoke-dockerd.log"; die "dockerd did not come up"; }
  say "phase 2: own dockerd (pid $DPID) on $W/data"
else
  # Neither the tool nor an engine: nothing can be built here. Say so plainly instead of failing
  # a machine that simply has no Docker (the CI machines of this project have the tool).
  if ! DOCKER=$(command -v docker) || ! $DOCKER info >/dev/null 2>&1; then
    echo "[smoke] SKIPPED: no docker-offline.sh (looked beside the checkout and in /work/shared/tools) and no reachable Docker engine"
    exit 0
  fi
  say "phase 2: building $IMAGE"
  t=$(now)
  $DOCKER build -t "$IMAGE" --build-arg BUILDKIT_INLINE_CACHE=1 "$CONTEXT"
  BUILD_FIGURE="docker build: $(elapsed "$t" "$(now)")s"
fi
$DOCKER image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE not found"

# ---- the image itself
size_bytes=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
user=$($DOCKER image inspect -f '{{.Config.User}}' "$IMAGE")
# shellcheck disable=SC2016  # a Go template, not a shell expansion
ports=$($DOCKER image inspect -f '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' "$IMAGE")
health=$($DOCKER image inspect -f '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' "$IMAGE")
entry=$($DOCKER image inspect -f '{{join .Config.Entrypoint " "}}' "$IMAGE")
passed "image $IMAGE: $((size_bytes / 1000000)) MB; user $user; ports $ports; entrypoint $entry"
$DOCKER history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | cut -c1-110 | sed 's/^/  layer /'
[ "$user" = "10001:0" ] || die "image user is '$user', expected 10001:0"
for p in 8000/tcp 8001/tcp 8002/tcp; do [[ " $ports" == *" $p "* ]] || die "image does not EXPOSE $p"; done
[[ $health == *healthcheck.py* ]] || die "image has no HEALTHCHECK (got '$health')"

# ---- rebuild after a code change: the dependency layer must come from the cache
if [ "$SKIP_REBUILD" != 1 ]; then
  CTX=$TMP/context
  mkdir -p "$CTX/deploy/docker"
  cp -r "$CONTEXT/pyproject.toml" "$CONTEXT/server" "$CONTEXT/model_repo" "$CONTEXT/.dockerignore" "$CTX/"
  cp "$CONTEXT/deploy/docker/healthcheck.py" "$CTX/deploy/docker/"
  # (no "# syntax=" line: BuildKit would try to pull that frontend image)
  grep -viE '^#[[:space:]]*syntax[[:space:]]*=' "$CONTEXT/Dockerfile" >"$CTX/Dockerfile"
  echo "# smoke rebuild $(date +%s)" >>"$CTX/server/__init__.py"
  t=$(now)
  DOCKER_BUILDKIT=1 $DOCKER build --network host -q --cache-from "$IMAGE" -t "$IMAGE-rebuild" "$CTX" >/dev/null
  REBUILD_SECS=$(elapsed "$t" "$(now)")
  passed "rebuild after a change under server/: ${REBUILD_SECS}s"
  $DOCKER rmi -f "$IMAGE-rebuild" >/dev/null
fi

# ---- run: start to ready, PID 1, user
HARDEN=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges)
$DOCKER rm -f "$CNAME" >/dev/null 2>&1 || true
start=$(date +%s.%N)
$DOCKER run -d --name "$CNAME" --network host "${HARDEN[@]}" "${ENV_ARGS[@]}" -e ORTSERVE_LOG_FORMAT=json \
  --health-interval 1s --health-start-period 30s "$IMAGE" >/dev/null
"$PYTHON" "$CHECKS" ready --http "127.0.0.1:$HTTP_PORT" --since "$start" --timeout 120 >"$TMP/ready" \
  || { $DOCKER logs --tail 40 "$CNAME"; die "container never became ready"; }
READY_SECS=$(sed -n 's/ready_after_secs=//p' "$TMP/ready")
passed "container start to ready (docker run → /v2/health/ready 200): ${READY_SECS}s"

pid=$($DOCKER inspect -f '{{.State.Pid}}' "$CNAME")
cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
[[ $cmdline == *"-m server"* ]] || die "PID 1 of the container is '$cmdline', not the server"
[ "$uid" = 10001 ] || die "server runs as uid $uid, expected 10001"
passed "PID 1 in the container: $cmdline(uid $uid)"

# ---- inference and metrics with real clients
"$PYTHON" "$CHECKS" infer --grpc "127.0.0.1:$GRPC_PORT" --http "127.0.0.1:$HTTP_PORT" --mlp | sed 's/^/  /'
"$PYTHON" "$CHECKS" metrics --metrics "127.0.0.1:$METRICS_PORT" | sed 's/^/  /'
PASSED=$((PASSED + 2))  # inference, metrics
# With ORTSERVE_LOG_FORMAT=json every line the server writes is one JSON object.
$DOCKER logs "$CNAME" >"$TMP/log" 2>&1
"$PYTHON" - "$TMP/log" <<'EOF' || die "the container log is not JSON lines (ORTSERVE_LOG_FORMAT=json)"
import json, sys
lines = [line for line in open(sys.argv[1], encoding="utf-8", errors="replace") if line.strip()]
bad = [line for line in lines if not line.lstrip().startswith("{")]
for line in lines:
    if line.lstrip().startswith("{"):
        json.loads(line)
if bad or not lines:
    print("".join(bad[:5]) or "empty log", file=sys.stderr)
    sys.exit(1)
print(f"  ok: {len(lines)} log lines, all JSON")
EOF
PASSED=$((PASSED + 1))

# ---- Docker's HEALTHCHECK
for _ in $(seq 1 60); do
  hs=$($DOCKER inspect -f '{{.State.Health.Status}}' "$CNAME")
  [ "$hs" = healthy ] && break
  sleep 0.5
done
[ "$hs" = healthy ] || die "HEALTHCHECK status is '$hs'"
passed "HEALTHCHECK: $hs"

# ---- SIGTERM: clean exit within the exit timeout
t=$(now)
$DOCKER kill --signal TERM "$CNAME" >/dev/null
code=$(timeout $((EXIT_TIMEOUT_SECS + 20)) "$DOCKER" wait "$CNAME") || die "no exit $((EXIT_TIMEOUT_SECS + 20))s after SIGTERM"
STOP_SECS=$(elapsed "$t" "$(now)")
$DOCKER logs "$CNAME" 2>&1 | grep -q 'ortserve stopped' || die "no 'ortserve stopped' in the log"
[ "$code" = 0 ] || { $DOCKER logs --tail 20 "$CNAME"; die "exit status $code after SIGTERM"; }
awk -v s="$STOP_SECS" -v l="$EXIT_TIMEOUT_SECS" 'BEGIN { exit !(s <= l) }' \
  || die "took ${STOP_SECS}s to exit, more than --exit-timeout-secs=$EXIT_TIMEOUT_SECS"
passed "SIGTERM → exit status $code after ${STOP_SECS}s (limit ${EXIT_TIMEOUT_SECS}s)"
$DOCKER rm -f "$CNAME" >/dev/null

# ---- KServe: the ClusterServingRuntime's own args, one model at /mnt/models
# Two layouts the storage initializer can leave there: a Triton model directory (its config.pbtxt
# names the model, so the InferenceService must have that name), and a bare model.onnx (served
# under whatever name the InferenceService has).
kserve_case() {  # NAME MODEL_DIR
  local name=$1 dir=$2 args
  mapfile -t args < <("$PYTHON" - "$ROOT/deploy/kserve/clusterservingruntime.yaml" "$name" <<'EOF'
import sys, yaml
runtime = yaml.safe_load(open(sys.argv[1]))
container = next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")
for arg in container["args"]:
    print(arg.replace("{{.Name}}", sys.argv[2]))
EOF
)
  # The runtime's ports (8080/9000) may be taken on this host: ours come after and win.
  $DOCKER run -d --name "$CNAME-kserve" --network host "${HARDEN[@]}" -e ORTSERVE_HOST=127.0.0.1 \
    -v "$dir:/mnt/models:ro" "$IMAGE" "${args[@]}" \
    "--http-port=$HTTP_PORT" "--grpc-port=$GRPC_PORT" "--metrics-port=$METRICS_PORT" >/dev/null
  "$PYTHON" "$CHECKS" ready --http "127.0.0.1:$HTTP_PORT" --timeout 60 >/dev/null \
    || { $DOCKER logs --tail 40 "$CNAME-kserve"; die "KServe-style container ($name) never became ready"; }
  "$PYTHON" "$CHECKS" infer --grpc "127.0.0.1:$GRPC_PORT" --model "$name" | sed 's/^/  /'
  passed "KServe runtime args (${args[*]}) serve $(basename "$dir") at /mnt/models as '$name'"
  $DOCKER rm -f "$CNAME-kserve" >/dev/null
}
cp -r "$ROOT/model_repo/simple" "$TMP/model-dir"
mkdir -p "$TMP/bare-model" && cp "$ROOT/model_repo/simple/1/model.onnx" "$TMP/bare-model/"
chmod -R a+rX "$TMP"
kserve_case simple "$TMP/model-dir"
kserve_case simple-kserve "$TMP/bare-model"

# ---- a user's repository mounted at /models replaces the bundled one
mkdir -p "$TMP/my_repo"
cp -r "$ROOT/model_repo/simple" "$TMP/my_repo/my_simple"
sed -i 's/^name: "simple"/name: "my_simple"/' "$TMP/my_repo/my_simple/config.pbtxt"
chmod -R a+rX "$TMP"
$DOCKER run -d --name "$CNAME-repo" --network host "${HARDEN[@]}" "${ENV_ARGS[@]}" \
  -v "$TMP/my_repo:/models:ro" "$IMAGE" >/dev/null
"$PYTHON" "$CHECKS" ready --http "127.0.0.1:$HTTP_PORT" --timeout 60 >/dev/null \
  || { $DOCKER logs --tail 40 "$CNAME-repo"; die "container with /models mounted never became ready"; }
"$PYTHON" "$CHECKS" infer --grpc "127.0.0.1:$GRPC_PORT" --model my_simple | sed 's/^/  /'
mlp_status=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/v2/models/mlp/ready")
[ "$mlp_status" != 200 ] || die "the bundled mlp is still served with /models mounted"
passed "-v my_repo:/models serves my_simple (bundled mlp → HTTP $mlp_status)"
$DOCKER kill --signal TERM "$CNAME-repo" >/dev/null
[ "$(timeout 30 "$DOCKER" wait "$CNAME-repo")" = 0 ] || die "the /models container did not exit 0 on SIGTERM"

echo
echo "figures: image $((size_bytes / 1000000)) MB (docker image inspect .Size); ${BUILD_FIGURE:-}"
[ -n "${REBUILD_SECS:-}" ] && echo "figures: rebuild after a server/ change ${REBUILD_SECS}s (dependency layer cached)"
echo "figures: start to ready ${READY_SECS}s; SIGTERM to exit ${STOP_SECS}s"
