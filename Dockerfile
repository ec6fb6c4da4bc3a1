# syntax=docker/dockerfile:1
# The kubelock operator image: `python -m kubelock.operator`, as uid 10001, with the runtime
# dependencies only (`pip install .[operator]`; no test, lint or build tools).
#
#   docker build -t ghcr.io/kubelock/kubelock:0.1.0 .
#
# Where no Docker engine exists, `make image` builds the same image with
# `python -m kubelock.testbed.images` (operator/kubelock/testbed/images.py): Debian bookworm's
# python3 and python3-venv from Debian's packages, the virtual environment below, the same user,
# environment and entrypoint. Keep the two in step.

ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS python
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

FROM python AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtual environment is self-contained, so the runtime stage copies one directory.
RUN python3 -m venv /opt/kubelock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# `--build-arg REQUIREMENT=.` installs the SDK and the CLI only (what an agent's image needs).
ARG REQUIREMENT=.[operator]
RUN /opt/kubelock/bin/pip install "$REQUIREMENT" \
    && /opt/kubelock/bin/python -m compileall -q /opt/kubelock/lib

FROM python
LABEL org.opencontainers.image.title="kubelock" \
      org.opencontainers.image.description="Exclusive, fenced, deadlock-aware locks for concurrent agents on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN echo 'kubelock:x:10001:10001::/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'kubelock:x:10001:' >> /etc/group
COPY --from=build /opt/kubelock /opt/kubelock
# Bytecode is compiled at build time; the root file system is read-only at run time.
ENV PATH=/opt/kubelock/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# /healthz and /metrics (the chart passes the same flags).
EXPOSE 8080 9090
ENTRYPOINT ["python", "-m", "kubelock.operator"]
CMD ["--health-address=0.0.0.0:8080", "--metrics-port=9090", "--metrics-address=0.0.0.0"]
