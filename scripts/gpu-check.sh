#!/usr/bin/env bash
# scripts/gpu-check.sh — ortserve's GPU paths on a real NVIDIA machine, in one command, < 8 minutes.
#
# On the GPU machine (no package index needed), from anywhere:
#   scripts/gpu-check.sh [--wheels DIR] [--out DIR] [--budget-s SECONDS]
#   1. the GPU: nvidia-smi and NVML (name, driver, the CUDA version the driver supports);
#   2. the environment: with --wheels, every wheel in DIR is installed with pip --no-index --target
#      into a private directory that goes first on PYTHONPATH, so onnxruntime-gpu shadows a
#      preinstalled CPU onnxruntime without touching it. A wheel may come as NAME.whl.part-NN pieces
#      (see --stage), joined here and checked against NAME.whl.sha256; *.deb files are unpacked beside
#      it (libb64 for perf_analyzer). The CUDA libraries of nvidia-* wheels already installed for this
#      Python go on LD_LIBRARY_PATH. Missing Python modules are named;
#   3. the CUDA execution provider: the CUDA version the onnxruntime build wants, the libraries the
#      loader cannot find for it (ldd), and whether it starts (server/runtime/gpus.py's probe);
#   4. pytest tests/gpu: device discovery, nv_gpu_* gauges vs NVML, KIND_GPU / KIND_AUTO over
#      tritonclient, IO binding, the CPU fallback;
#   5. loadtest/bench_gpu.py: raw ORT CUDA vs ortserve on a big MLP at batch 1 and 32 — only when
#      the CUDA provider starts; otherwise the script says why it did not run.
#   Each step runs under `timeout` with at most what is left of --budget-s (default 450 s). The
#   summary comes last; exit status 0 = all passed, 1 = a step failed, 2 = no usable CUDA provider
#   (the NVML and discovery checks still ran). --out DIR gets the log, the JUnit XML, the benchmark's
#   JSON and the servers' logs.
#
# On a machine with PyPI, to prepare DIR for a GPU machine that has none:
#   scripts/gpu-check.sh --stage DIR [--part-mib 50]
#   downloads (pip download --no-deps, CPython $STAGE_PYTHON manylinux x86_64) onnxruntime-gpu and
#   the wheels ortserve and its tests need beyond what such a machine usually has, plus libb64's
#   .deb when apt-get can fetch it, splits every file over --part-mib MiB into pieces with a .sha256,
#   and lists what to carry. README.md's "GPU" section says which builds fit which CUDA.
#
# Knobs (environment): PYTHON [python3], GPU_CHECK_WORK [/tmp/ortserve-gpu-check],
#   ORT_GPU_VERSION [1.31.1: CUDA 13; 1.26.0 is the last for CUDA 12], STAGE_PYTHON [3.12].
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
WORK=${GPU_CHECK_WORK:-/tmp/ortserve-gpu-check}
ORT_GPU_VERSION=${ORT_GPU_VERSION:-1.31.1}
STAGE_PYTHON=${STAGE_PYTHON:-3.12}
BUDGET=450
RESERVE=10 # seconds kept for the summary
PART_MIB=50
WHEELS="" OUT_DIR="" STAGE_DIR=""
# Beyond what the GPU image has (numpy, grpcio, protobuf, aiohttp, uvloop, prometheus-client, onnx,
# pytest, nvidia-ml-py): the server's and the tests' other packages, at the project's pins.
# geventhttpclient: tritonclient 2.41 asks for <=2.0.2, which has no CPython 3.12 wheel; 2.0.12
# passes tests/integration/test_http_api.py.
STAGE_WHEELS=(
  "onnxruntime-gpu==$ORT_GPU_VERSION" orjson grpcio-health-checking==1.62.3 grpcio-reflection==1.62.3
  tritonclient==2.41.1 python-rapidjson geventhttpclient==2.0.12 gevent greenlet zope.event zope.interface brotli
  nvidia-ml-py nvidia-cuda-runtime-cu12
)

T0=$SECONDS
SUMMARY=()
STATUS=0
say() { echo "[gpu-check +$((SECONDS - T0))s] $*"; }
record() { SUMMARY+=("$1"); say "$1"; }
failed() { record "FAIL $1"; STATUS=1; }

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT_DIR=$2; shift 2 ;;
    --budget-s) BUDGET=$2; shift 2 ;;
    --stage) STAGE_DIR=$2; shift 2 ;;
    --part-mib) PART_MIB=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done

# ------------------------------------------------------------------ budget
# The seconds a step may take: at most $1, and never past the budget (less the summary's reserve).
step_seconds() {
  local want=$1 have=$((BUDGET - (SECONDS - T0) - RESERVE))
  [ "$have" -lt "$want" ] && want=$have
  [ "$want" -lt 1 ] && want=1
  echo "$want"
}

# run_step NAME MAX_SECONDS COMMAND...: the command under timeout; says when the budget stopped it.
run_step() {
  local name=$1 seconds rc
  seconds=$(step_seconds "$2")
  shift 2
  timeout --kill-after=10 "$seconds" "$@"
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then say "$name: stopped by the time budget after ${seconds}s"; fi
  return "$rc"
}

# ------------------------------------------------------------------ --stage
split_large_files() {
  local dir=$1 file
  for file in "$dir"/*; do
    [ -f "$file" ] || continue
    case $file in *.part-* | *.sha256) continue ;; esac
    if [ "$(stat -c %s "$file")" -gt $((PART_MIB * 1024 * 1024)) ]; then
      (cd "$dir" && sha256sum "$(basename "$file")" >"$(basename "$file").sha256")
      split -b "${PART_MIB}M" -d -a 2 "$file" "$file.part-" && rm "$file"
    fi
  done
}

stage() {
  mkdir -p "$STAGE_DIR" || exit 1
  say "downloading ${#STAGE_WHEELS[@]} wheels for CPython $STAGE_PYTHON, manylinux x86_64, into $STAGE_DIR"
  local platforms=() tag
  for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$STAGE_PYTHON" --implementation cp \
    "${platforms[@]}" -d "$STAGE_DIR" "${STAGE_WHEELS[@]}" || exit 1
  if command -v apt-get >/dev/null; then
    (cd "$STAGE_DIR" && apt-get download -q libb64-0d >/dev/null 2>&1) || say "apt-get could not fetch libb64-0d: perf_analyzer will be skipped there"
  fi
  split_large_files "$STAGE_DIR"
  say "in $STAGE_DIR (carry them in calls of at most 64 MiB each, into one directory; then --wheels DIR):"
  find "$STAGE_DIR" -maxdepth 1 -type f -printf '%s %f\n' | sort -k 2 |
    awk '{printf "  %12d  %s\n", $1, $2; total += $1} END {printf "  %12d  bytes in all\n", total}'
  exit 0
}
[ -n "$STAGE_DIR" ] && stage

if [ -n "$OUT_DIR" ]; then
  mkdir -p "$OUT_DIR" && exec > >(tee -a "$OUT_DIR/gpu-check.log") 2>&1
fi
say "repository $ROOT, python $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)), budget ${BUDGET}s"

# ------------------------------------------------------------------ 1. the GPU
DRIVER_CUDA=""
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv,noheader
  DRIVER_CUDA=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n 1)
  record "GPU: $(nvidia-smi -L 2>/dev/null | grep -c '^GPU ') visible to nvidia-smi; the driver supports CUDA ${DRIVER_CUDA:-?}"
else
  record "GPU: nvidia-smi not found (no NVIDIA driver here?): the GPU tests will skip"
fi

# ------------------------------------------------------------------ 2. the environment
install_wheels() {
  local joined=$WORK/wheels pieces base
  rm -rf "$joined" "$WORK/site" && mkdir -p "$joined" "$WORK/site" || return 1
  cp "$WHEELS"/*.whl "$joined"/ 2>/dev/null
  for pieces in "$WHEELS"/*.whl.part-00; do
    [ -f "$pieces" ] || continue
    base=$(basename "${pieces%.part-00}")
    cat "$WHEELS/$base".part-* >"$joined/$base"
    if [ -f "$WHEELS/$base.sha256" ]; then
      (cd "$joined" && sha256sum -c --quiet "$WHEELS/$base.sha256") || { failed "$base: joined pieces do not match $base.sha256"; return 1; }
      say "$base: joined from $(find "$WHEELS" -maxdepth 1 -name "$base.part-*" | wc -l) pieces, sha256 matches"
    fi
  done
  say "installing $(find "$joined" -name '*.whl' | wc -l) wheel(s) into $WORK/site"
  run_step "pip install" 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$joined"/*.whl
}

unpack_debs() {
  local deb
  for deb in "$WHEELS"/*.deb; do
    [ -f "$deb" ] && dpkg -x "$deb" "$WORK/root" && say "unpacked $(basename "$deb")"
  done
}

# The lib/ folders of nvidia-* wheels on this Python's path (CUDA 13 wheels share nvidia/cu13/lib).
nvidia_library_path() {
  run_step "library search" 30 "$PY" - <<'EOF'
import glob, os, sys
found = []
for entry in sys.path:
    for lib in sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib"))):
        if lib not in found and glob.glob(os.path.join(lib, "lib*.so*")):
            found.append(lib)
print(":".join(found))
EOF
}

export PYTHONPATH=$ROOT
if [ -n "$WHEELS" ]; then
  if install_wheels; then
    export PYTHONPATH=$WORK/site:$ROOT PATH=$WORK/site/bin:$PATH
    record "environment: wheels from $WHEELS installed into $WORK/site (first on PYTHONPATH)"
  else
    failed "environment: the wheels in $WHEELS did not install"
  fi
  unpack_debs
fi
LIBS=$(nvidia_library_path)
for dir in "$WORK/root/usr/lib/x86_64-linux-gnu" "$WORK/root/lib/x86_64-linux-gnu"; do
  [ -d "$dir" ] && LIBS=${LIBS:+$LIBS:}$dir
done
export LD_LIBRARY_PATH=${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

MISSING=$(run_step "imports" 60 "$PY" - <<'EOF'
import importlib
needed = ["onnxruntime", "numpy", "grpc", "grpc_health.v1", "grpc_reflection.v1alpha", "google.protobuf", "prometheus_client",
          "uvloop", "aiohttp", "orjson", "onnx", "pytest", "tritonclient.grpc", "tritonclient.http", "pynvml"]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as exc:  # a broken install is as missing as an absent one
        missing.append(f"{name} ({type(exc).__name__}: {exc})".replace("\n", " "))
print("; ".join(missing))
EOF
)
if [ -n "$MISSING" ]; then
  failed "environment: cannot import $MISSING — bring them with --wheels (scripts/gpu-check.sh --stage DIR)"
else
  record "environment: every module the server and its GPU tests import is there"
fi

# ------------------------------------------------------------------ 3. NVML and the CUDA provider
run_step "NVML" 30 "$PY" - <<'EOF'
try:
    import pynvml
except ImportError:
    print("NVML: nvidia-ml-py is not installed: no nv_gpu_* metrics, NVML tests skip")
else:
    try:
        pynvml.nvmlInit()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        print(f"NVML: driver {pynvml.nvmlSystemGetDriverVersion()}, CUDA {cuda // 1000}.{cuda % 1000 // 10}, {pynvml.nvmlDeviceGetCount()} GPU(s)")
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(h)
            print(f"  GPU {i}: {pynvml.nvmlDeviceGetName(h)} {pynvml.nvmlDeviceGetUUID(h)}, {memory.total / 2**30:.1f} GiB")
    except pynvml.NVMLError as exc:
        print(f"NVML: unavailable ({exc})")
EOF

mkdir -p "$WORK"
CUDA_PROBLEM=$(run_step "CUDA probe" 90 "$PY" - <<'EOF' 2>"$WORK/cuda-probe.log"
import os
import onnxruntime as ort
from server.runtime import gpus
print(f"onnxruntime {ort.__version__} from {os.path.dirname(ort.__file__)}: {ort.get_available_providers()}; built for CUDA {gpus.cuda_build_version()}", flush=True)
problem = gpus.cuda_provider_problem()
print("CUDA_PROBLEM=" + (problem or "").replace("\n", " "))
EOF
)
say "$(echo "$CUDA_PROBLEM" | grep -v '^CUDA_PROBLEM=')"
BUILD_CUDA=$("$PY" -c 'from server.runtime import gpus; print(gpus.cuda_build_version() or "")' 2>/dev/null)
if [ -n "$BUILD_CUDA" ]; then
  CAPI=$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
  NOT_FOUND=$(timeout 30 ldd "$CAPI/libonnxruntime_providers_cuda.so" 2>&1 | awk '/not found/ {print $1}' | tr '\n' ' ')
  [ -n "$NOT_FOUND" ] && say "libraries the CUDA provider needs and the loader cannot find: $NOT_FOUND"
  if [ -n "$DRIVER_CUDA" ] && [ "${BUILD_CUDA%%.*}" -gt "${DRIVER_CUDA%%.*}" ]; then
    say "this onnxruntime-gpu needs CUDA $BUILD_CUDA, newer than the driver's CUDA $DRIVER_CUDA"
  fi
fi
if ! echo "$CUDA_PROBLEM" | grep -q '^CUDA_PROBLEM='; then
  failed "CUDA provider: the probe did not finish: $(tail -n 5 "$WORK/cuda-probe.log")"
  CUDA_PROBLEM="the probe did not finish"
else
  CUDA_PROBLEM=$(echo "$CUDA_PROBLEM" | sed -n 's/^CUDA_PROBLEM=//p')
fi
if [ -z "$CUDA_PROBLEM" ]; then
  record "CUDA provider: starts on GPU 0 (onnxruntime built for CUDA $BUILD_CUDA)"
else
  record "CUDA provider: CANNOT START — $CUDA_PROBLEM"
  [ -z "$BUILD_CUDA" ] && say "this is a CPU build of onnxruntime: bring onnxruntime-gpu for CUDA ${DRIVER_CUDA%%.*} (README.md, GPU)"
fi

# ------------------------------------------------------------------ 4. the GPU tests
JUNIT=$WORK/gpu-tests.xml
cd "$ROOT" || exit 1
run_step "pytest" 200 "$PY" -m pytest tests/gpu -v -rs -p no:cacheprovider --junitxml "$JUNIT" | tee "$WORK/pytest.log"
rc=${PIPESTATUS[0]}
COUNTS=$(grep -E '^=+ .* in [0-9.]+s' "$WORK/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
if [ "$rc" -eq 0 ]; then record "tests/gpu: ${COUNTS:-passed}"; else failed "tests/gpu: pytest exit $rc (${COUNTS:-no summary})"; fi

# ------------------------------------------------------------------ 5. the benchmark
BENCH_JSON=$ROOT/loadtest/results/gpu.json
rm -f "$BENCH_JSON" "$ROOT/loadtest/results/ortserve-gpu.log" # an earlier run's figures must not pass for this one's
if [ -n "$CUDA_PROBLEM" ]; then
  record "benchmark: not run — the CUDA execution provider cannot start ($CUDA_PROBLEM)"
elif [ "$(step_seconds 9999)" -lt 90 ]; then
  failed "benchmark: not run — only $(step_seconds 9999)s of the budget left"
else
  seconds=$(step_seconds 260)
  if run_step "benchmark" "$seconds" "$PY" -m loadtest.bench_gpu --budget-s $((seconds - 15)) --client auto --output "$BENCH_JSON"; then
    record "benchmark: done ($BENCH_JSON)"
  else
    failed "benchmark: exit $? (the table above shows what was measured)"
  fi
fi

# ------------------------------------------------------------------ summary
if [ -n "$OUT_DIR" ]; then
  for file in "$JUNIT" "$BENCH_JSON" "$ROOT/loadtest/results/ortserve-gpu.log"; do
    [ -f "$file" ] && cp "$file" "$OUT_DIR"/
  done
fi
echo
echo "gpu-check summary ($((SECONDS - T0))s of ${BUDGET}s):"
printf '  %s\n' "${SUMMARY[@]}"
[ "$STATUS" -eq 0 ] && [ -n "$CUDA_PROBLEM" ] && STATUS=2
exit "$STATUS"
