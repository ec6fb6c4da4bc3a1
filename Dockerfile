# syntax=docker/dockerfile:1
# The kubelock operator image: `python -m kubelock.operator`, as uid 10001, with the runtime
# dependencies only (`pip install .[operator]`; no test or lint tools).
#
#   docker build -t ghcr.io/kubelock/kubelock:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtual environment is self-contained, so the runtime stage copies one directory.
RUN python -m venv /opt/kubelock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/kubelock/bin/pip install ".[operator]" \
    && /opt/kubelock/bin/python -m compileall -q /opt/kubelock/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubelock" \
      org.opencontainers.image.description="Exclusive, fenced, deadlock-aware locks for concurrent agents on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
RUN groupadd --system --gid 10001 kubelock \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin kubelock
COPY --from=build /opt/kubelock /opt/kubelock
# Bytecode is compiled at build time; the root file system is read-only at run time.
ENV PATH=/opt/kubelock/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /healthz and /metrics (the chart passes the same flags).
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "kubelock.operator"]
CMD ["--health-address=0.0.0.0:8080", "--metrics-port=9090", "--metrics-address=0.0.0.0"]
