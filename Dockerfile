# One image for the FlowKit operator and workers.
# BASE is a build argument: a public Python image by default, a locally bootstrapped
# Debian + Python 3.11 base in the test cluster (scripts/testenv image build).
#
#   flowkit worker --roles ... --handlers module:attr   (worker pods; the default entrypoint)
#   flowkit-operator                                     (the operator pod: command override)
#
# Users add their handlers on top: FROM this image, COPY a module under /opt/flowkit (on
# PYTHONPATH) or pip install a package, point a FlowWorkerPool's handlers at it (docs/operator.md).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

# Where the build machine re-signs TLS, pass its CA bundle as a build-time mount and
# name it here (scripts/testenv does); it is used by pip only and is not kept.
ARG PIP_CERT=""

# Bytecode is compiled at install time; nothing is written at run time (read-only root).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/opt/flowkit \
    PATH=/opt/flowkit/venv/bin:$PATH

COPY pyproject.toml README.md /src/
COPY flowkit /src/flowkit
COPY operator /src/operator
COPY examples /opt/flowkit/examples

RUN set -eu; \
    if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi; \
    python3 -m venv /opt/flowkit/venv; \
    /opt/flowkit/venv/bin/pip install --no-cache-dir --disable-pip-version-check "/src[operator]"; \
    python3 -m compileall -q /opt/flowkit/examples; \
    rm -rf /src; \
    useradd --uid 10001 --user-group --home-dir /home/flowkit --create-home --shell /usr/sbin/nologin flowkit

USER 10001
WORKDIR /opt/flowkit
ENTRYPOINT ["flowkit"]
CMD ["--help"]
