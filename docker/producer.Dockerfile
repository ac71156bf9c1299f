# aimass producer: the slim client image (no ONNX Runtime, no TensorFlow) for the
# `aimass` command line: classify, generate, status, result, models, bench, ...
#
#   docker build -f docker/producer.Dockerfile -t aimass-producer .
#   docker run --rm -e REDIS_URL=redis://host:6379/0 aimass-producer status <job-id>
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

FROM python-base AS builder
RUN python -m venv /opt/venv
# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml /src/pyproject.toml
COPY docker/pyproject_requirements.py /tmp/
RUN python /tmp/pyproject_requirements.py --pyproject /src/pyproject.toml producer > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY . /src
RUN pip install --no-cache-dir --no-deps /src

FROM python-base AS producer
RUN groupadd --gid 10001 aimass \
    && useradd --uid 10001 --gid aimass --create-home --shell /usr/sbin/nologin aimass
COPY --from=builder /opt/venv /opt/venv
ENV AIMASS_MODEL_REPOSITORY=/models
# The aimass user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/aimass
# No HEALTHCHECK: each run is one command, judged by its exit status.
ENTRYPOINT ["aimass"]
CMD ["--help"]
