# One image for the FlowKit operator and workers.
# BASE is a build argument: a public Python image by default, a locally bootstrapped
# Debian + Python 3.11 base in the test cluster (scripts/testenv image build).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# Where the build machine re-signs TLS, pass its CA bundle as a build-time mount and
# name it here (scripts/testenv does); it is used by pip only and is not kept.
ARG PIP_CERT=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/flowkit/bin:$PATH

COPY pyproject.toml README.md /src/
COPY flowkit /src/flowkit
COPY examples /src/examples

RUN set -eu; \
    if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi; \
    python3 -m venv /opt/flowkit; \
    /opt/flowkit/bin/pip install --no-cache-dir --disable-pip-version-check "/src[distributed]"; \
    cp -r /src/examples /opt/flowkit/examples; \
    rm -rf /src; \
    useradd --uid 10001 --home-dir /work --create-home --shell /usr/sbin/nologin flowkit

USER 10001
WORKDIR /opt/flowkit
ENTRYPOINT ["flowkit"]
CMD ["--help"]
