# syntax=docker/dockerfile:1
# The one image every step of the fakeface Kubeflow pipelines runs in: Python 3.11 with
# TensorFlow, this project (fakeface, its components and pipelines) and its locked dependencies,
# so no step installs anything when its pod starts.
#
#   make image                                   # docker or podman, whichever is installed
#   docker build -t ghcr.io/fakeface/fakeface:0.1.0 .
#   docker push ghcr.io/fakeface/fakeface:0.1.0
#
# BASE_IMAGE: any Debian/Ubuntu image with Python 3.11. The default, TensorFlow's own GPU image,
# brings TensorFlow with CUDA (kept: the venv sees the base's packages); a plain Python base gets
# TensorFlow from the package index, at the locked version (CPU, or a GPU with the host's CUDA).
# Where no registry is reachable, docker/base-image.sh makes a Debian base from Debian's packages.
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="fakeface" \
      org.opencontainers.image.description="GAN-face detector: the fakeface pipeline and its Kubeflow components" \
      org.opencontainers.image.licenses="MIT"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    GIT_PYTHON_REFRESH=quiet \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib \
    KERAS_HOME=/opt/keras \
    VIRTUAL_ENV=/opt/fakeface \
    PATH=/opt/fakeface/bin:$PATH

# A CA bundle for pip, where the build reaches the index through a TLS-intercepting proxy: the
# file is mounted into the build (docker/build.sh), never copied into the image.
ARG BUILD_CA_BUNDLE=""

# The non-root user with a fixed numeric id (runAsNonRoot can check it), first: this layer never
# changes. The KFP v2 launcher writes input artifacts under /gcs, /minio and /s3 (newer KFP backends
# mount emptyDirs there, older ones need them to exist and be writable); /checkpoints is where the
# train step's volume is mounted (FAKEFACE_CHECKPOINT_DIR), and a plain folder of the user where
# none is (kfp.local's DockerRunner); KERAS_HOME must be writable by the user, or Keras looks for
# the baked weights in /tmp/.keras instead.
RUN useradd --no-log-init --create-home --uid 10001 --user-group --shell /usr/sbin/nologin fakeface \
 && mkdir -p /gcs /minio /s3 /checkpoints /opt/keras \
 && chown fakeface:fakeface /gcs /minio /s3 /checkpoints /opt/keras

# A virtual environment on the base's Python (Debian's refuses a system-wide pip install,
# PEP 668) that still sees the base's own packages (its TensorFlow with CUDA); a current pip in
# it, since old ones backtrack for minutes over the botocore family.
RUN python3 -m venv --system-site-packages --without-pip /opt/fakeface \
 && python3 -m pip --python /opt/fakeface/bin/python install --no-cache-dir \
      ${BUILD_CA_BUNDLE:+--cert "$BUILD_CA_BUNDLE"} "pip==25.3"

# Dependencies first, from the lock: the same versions in every build, and a code change does
# not reinstall them (this layer is reused while docker/requirements.lock is unchanged).
COPY docker/requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir ${BUILD_CA_BUNDLE:+--cert "$BUILD_CA_BUNDLE"} -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# Backbone weights baked in (comma-separated names, e.g. xception,mobilenetv2) for clusters
# without internet; empty: pods download them on first use, or read a cache mounted at KERAS_HOME.
ARG BAKE_WEIGHTS=""
COPY docker/bake_weights.py src/fakeface/model/backbones.py /tmp/bake/
RUN python /tmp/bake/bake_weights.py "${BAKE_WEIGHTS}" && rm -rf /tmp/bake

# The project itself, without its dependencies (installed above), from a scratch copy of the
# sources that is removed once installed.
WORKDIR /tmp/fakeface-build
COPY pyproject.toml README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-cache-dir --no-deps . ${BUILD_CA_BUNDLE:+--cert "$BUILD_CA_BUNDLE"} \
 && python -c "import fakeface.cli.main, fakeface.components.steps, fakeface.pipelines.training, kfp, tensorflow" \
 && rm -rf /tmp/fakeface-build /tmp/matplotlib

# The commit the image was built from, for the MLflow run's git.commit tag (no .git inside the
# image): --build-arg GIT_COMMIT=$(git rev-parse HEAD). Last, so a new commit rebuilds nothing.
ARG GIT_COMMIT=unknown
ENV FAKEFACE_GIT_COMMIT=${GIT_COMMIT}

USER 10001:10001
ENV HOME=/home/fakeface
WORKDIR /home/fakeface

# No ENTRYPOINT: Kubernetes replaces the command of a step, but Docker (kfp.local's DockerRunner)
# would pass KFP's `sh -c ...` to an entry point as arguments. By hand: docker run IMAGE fakeface ...
CMD ["fakeface", "--help"]
