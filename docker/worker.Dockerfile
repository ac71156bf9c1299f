# aimass worker: ONNX Runtime on CUDA, no TensorFlow. Also runs Flower (see docker-compose.yml).
#
#   docker build -f docker/worker.Dockerfile -t aimass-worker .
#
# BASE_IMAGE must carry the CUDA major version and cuDNN major version that the installed
# onnxruntime-gpu was built for: onnxruntime-gpu on PyPI is built for CUDA 13.0 and
# cuDNN 9 (its build info says cuda_version 13.0; its CUDA provider links libcublas.so.13
# and libcudart.so.13). The build checks this below. The "runtime" flavour holds the
# CUDA libraries but no compiler; "cudnn" adds cuDNN. The host needs an NVIDIA driver
# recent enough for CUDA 13 and the NVIDIA Container Toolkit.
ARG BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

FROM ${BASE_IMAGE} AS python-base
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's own Python (3.12): no third-party apt source needed. Versions are
# left to the base image's release (pinning them breaks with each security update).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

FROM python-base AS builder
RUN python3 -m venv /opt/venv
# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml /src/pyproject.toml
COPY docker/pyproject_requirements.py docker/check_onnxruntime_cuda.py /tmp/
# Flower shares this image: it needs the worker's Celery app (celery -A aimass.worker.main flower).
ARG FLOWER_REQUIREMENT="flower>=2.0,<3"
RUN python /tmp/pyproject_requirements.py --pyproject /src/pyproject.toml worker > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt "${FLOWER_REQUIREMENT}" \
    && python /tmp/check_onnxruntime_cuda.py
COPY . /src
RUN pip install --no-cache-dir --no-deps /src

FROM python-base AS worker
# /models has the same owner (uid 10001) as in the export image, so that whichever
# container first mounts the empty "models" volume gives it an owner the export job
# can write as.
RUN groupadd --gid 10001 aimass \
    && useradd --uid 10001 --gid aimass --create-home --shell /usr/sbin/nologin aimass \
    && install -d -o aimass -g aimass /models
COPY --from=builder /opt/venv /opt/venv
ENV AIMASS_MODEL_REPOSITORY=/models \
    AIMASS_METRICS_PORT=9100
# The aimass user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/aimass
# Prometheus metrics.
EXPOSE 9100
# Celery's warm shutdown: on SIGTERM it stops taking jobs and finishes those in flight.
STOPSIGNAL SIGTERM
# Models load after start-up; `aimass check` passes once this host's worker is
# consuming with its models loaded.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["aimass", "check"]
CMD ["aimass", "worker", "--devices", "auto"]
