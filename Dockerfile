# syntax=docker/dockerfile:1
# The one image every step of the fakeface Kubeflow pipeline runs in (issue 3): TensorFlow with
# CUDA from the official image, plus this project (fakeface, the components, the pipeline) and its
# dependencies (kfp, mlflow, ...), so no step installs anything when its pod starts.
#
#   docker build -t ghcr.io/fakeface/fakeface:0.1.0 .
#   docker push ghcr.io/fakeface/fakeface:0.1.0
#
# CPU-only image: --build-arg TF_IMAGE_TAG=2.21.0. Keep the tag on the TensorFlow version that
# pyproject.toml allows (tensorflow>=2.16,<2.22), so pip keeps the image's own TensorFlow.
ARG TF_IMAGE_TAG=2.21.0-gpu
FROM tensorflow/tensorflow:${TF_IMAGE_TAG}

LABEL org.opencontainers.image.title="fakeface" \
      org.opencontainers.image.description="GAN-face detector: the fakeface pipeline and its Kubeflow components" \
      org.opencontainers.image.licenses="MIT"

# The commit the image was built from, for the MLflow run's git.commit tag (there is no .git
# inside the image): docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) ...
ARG GIT_COMMIT=unknown
ENV FAKEFACE_GIT_COMMIT=${GIT_COMMIT}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib

# Build from a scratch copy of the sources, removed once installed: the image holds the installed
# package only (site-packages), not a second copy of the tree.
WORKDIR /tmp/fakeface-build
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN python3 -m pip install --no-cache-dir . \
 && python3 -c "import fakeface, components._runtime, pipelines.settings, kfp, tensorflow" \
 && rm -rf /tmp/fakeface-build

# A non-root user with a fixed numeric id (runAsNonRoot can check it). The KFP v2 launcher writes
# input artifacts under /gcs, /minio and /s3; newer KFP backends mount emptyDirs there, older ones
# need them to exist and be writable.
RUN useradd --no-log-init --create-home --uid 10001 --user-group --shell /usr/sbin/nologin fakeface \
 && mkdir -p /gcs /minio /s3 \
 && chown fakeface:fakeface /gcs /minio /s3

USER 10001:10001
ENV HOME=/home/fakeface
WORKDIR /home/fakeface

# Kubeflow sets its own command; by hand the image is the fakeface CLI.
ENTRYPOINT ["fakeface"]
CMD ["--help"]
