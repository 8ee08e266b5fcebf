# syntax=docker/dockerfile:1
# ortserve — CPU image (the default). The CUDA variant is Dockerfile.cuda.
#
#   docker build -t ortserve .
#   docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 ortserve          # serves the bundled model_repo/
#   docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \
#       -v "$PWD/my_repo:/models:ro" ortserve                               # serves your Triton repository
#
# Every flag is also an ORTSERVE_* environment variable (--grpc-port = ORTSERVE_GRPC_PORT); flags
# given after the image name win over the environment. Set ports through the environment rather
# than flags so that the HEALTHCHECK probes the right port (it reads ORTSERVE_HOST/ORTSERVE_HTTP_PORT).

# ---- deps: a virtual environment with the runtime dependencies only ---------------------------
# Its layer changes only when pyproject.toml's dependency list does, so code changes rebuild in seconds.
FROM python:3.11-slim-bookworm AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# The dependency list is read from pyproject.toml (tomllib is in Python 3.11's standard library),
# so the server package itself is not installed: its source is copied into the final stage.
# numpy's own test suites (~25 MB) and the venv's pip/setuptools are not needed at run time.
RUN python3 -m venv /opt/ortserve \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && /opt/ortserve/bin/pip install --no-compile -r /tmp/requirements.txt \
 && /opt/ortserve/bin/pip uninstall -y pip setuptools \
 && find /opt/ortserve/lib -type d -path '*/numpy/*' -name tests -prune -exec rm -rf {} + \
 && /opt/ortserve/bin/python -m compileall -q -j 0 /opt/ortserve/lib >/dev/null

# ---- final image -------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="ortserve" \
      org.opencontainers.image.description="ONNX Runtime inference server with NVIDIA Triton's gRPC/HTTP contract (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Non-root, group 0 (so an arbitrary UID, as OpenShift assigns, can still read everything).
RUN useradd --system --no-log-init --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --uid 10001 --gid 0 ortserve

COPY --from=deps /opt/ortserve /opt/ortserve
COPY model_repo/ /models/
COPY deploy/docker/healthcheck.py /opt/ortserve/healthcheck.py
COPY server/ /opt/ortserve/app/server/
# Compiled here because the container may run with a read-only root filesystem.
RUN /opt/ortserve/bin/python -m compileall -q /opt/ortserve/app /opt/ortserve/healthcheck.py >/dev/null

# ORT_DISABLE_TELEMETRY: ONNX Runtime (1.2x+, Linux too) otherwise sets up its telemetry, which
# tries to persist a device id under $HOME/.cache and warns, in plain text, on a read-only root.
ENV PATH=/opt/ortserve/bin:$PATH \
    PYTHONPATH=/opt/ortserve/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    ORTSERVE_MODEL_REPOSITORY=/models

USER 10001:0
WORKDIR /opt/ortserve/app
EXPOSE 8000 8001 8002
# The server handles SIGTERM itself (readiness false, drain, exit within --exit-timeout-secs).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=60s --retries=3 \
  CMD ["/opt/ortserve/bin/python", "/opt/ortserve/healthcheck.py"]
# Exec form: the Python process is PID 1 and receives the signals itself.
ENTRYPOINT ["/opt/ortserve/bin/python", "-m", "server"]
CMD []
