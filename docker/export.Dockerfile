# aimass export: trains the model zoo with TensorFlow (on the CPU), converts it to ONNX
# and publishes it into the model repository, then exits. Only this image has TensorFlow.
#
#   docker build -f docker/export.Dockerfile -t aimass-export .
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
# Dependencies first, from pyproject.toml alone: TensorFlow is not re-downloaded when
# only the code changes.
COPY pyproject.toml /src/pyproject.toml
COPY docker/pyproject_requirements.py /tmp/
RUN python /tmp/pyproject_requirements.py --pyproject /src/pyproject.toml export > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY . /src
RUN pip install --no-cache-dir --no-deps /src

FROM python-base AS export
# /models has the same owner (uid 10001) as in the worker image: the export job writes
# the repository into the named volume mounted there.
RUN groupadd --gid 10001 aimass \
    && useradd --uid 10001 --gid aimass --create-home --shell /usr/sbin/nologin aimass \
    && install -d -o aimass -g aimass /models
COPY --from=builder /opt/venv /opt/venv
ENV AIMASS_MODEL_REPOSITORY=/models \
    TF_CPP_MIN_LOG_LEVEL=1
# The aimass user, by number so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/aimass
# No HEALTHCHECK: a one-shot job, judged by its exit status.
CMD ["aimass", "export", "zoo", "--repository", "/models"]
