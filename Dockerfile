# syntax=docker/dockerfile:1
# Images per role, built from the lock files in requirements/ (hashes checked):
#   target `app`  the APIs, the relay, the workers (OCR with tesseract) and amsctl: no PyTorch
#   target `ocr`  the OCR worker with both engines and easyocr's English models baked in
# Both run as an unprivileged user under tini (signals forwarded, zombies reaped) and stop
# on SIGTERM; compose gives workers a grace period longer than WORKER_SHUTDOWN_TIMEOUT_S.
#   docker build --target app -t ai-micro-service:app .
#   docker build --target ocr -t ai-micro-service:ocr .   [--build-arg TORCH_VARIANT=cuda]

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LOG_FORMAT=json
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini as PID 1; tesseract (with English data), the default OCR engine.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini tesseract-ocr tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 ams \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin ams

# --- dependencies, built apart so the final images carry no pip caches or build files ---
FROM base AS deps
WORKDIR /deps
COPY requirements/ requirements/
RUN python -m venv /opt/venv \
    && pip install --require-hashes --no-deps -r requirements/runtime.txt

FROM deps AS deps-ocr
# cpu: PyTorch's CPU build (hundreds of MB); cuda: PyPI's CUDA build (several GB).
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN if [ "$TORCH_VARIANT" = cpu ]; then \
        pip install --no-deps --index-url "$TORCH_INDEX_URL" -r requirements/torch.txt; \
    else \
        pip install -r requirements/torch.txt; \
    fi \
    && pip install --require-hashes --no-deps -r requirements/ocr.txt

# --- the project itself, installed on top of either set of dependencies ---
FROM scratch AS src
COPY pyproject.toml README.md /build/
COPY apps/ /build/apps/
COPY workers/ /build/workers/
COPY outbox/ /build/outbox/
COPY shared/ /build/shared/
COPY amsctl/ /build/amsctl/
COPY migrations/ /build/migrations/
COPY frontends/ /build/frontends/

FROM deps AS project
COPY --from=src /build/ /build/
RUN pip install --no-deps /build

FROM deps-ocr AS project-ocr
COPY --from=src /build/ /build/
RUN pip install --no-deps /build

# --- APIs, relay, workers, amsctl ---
FROM base AS app
COPY --from=project /opt/venv /opt/venv
WORKDIR /app
COPY infra/ infra/
COPY scripts/healthcheck.py scripts/dev_tls.py scripts/
# The compose `certs` volume starts as this (empty, owned by the service user) directory.
RUN mkdir /certs && chown 10001:10001 /certs
USER 10001:10001
# The API ports (auth 8002, users 8001, admin 8003) and the metrics ports (relay 9101,
# workers 9102-9105); each compose service picks its own command.
EXPOSE 8001 8002 8003 9101 9102 9103 9104 9105
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "amsctl", "--help"]

# --- the OCR worker: both engines, easyocr's models in OCR_MODEL_DIR ---
FROM base AS ocr
COPY --from=project-ocr /opt/venv /opt/venv
ENV OCR_ENGINE=easyocr \
    OCR_MODEL_DIR=/var/lib/ams/easyocr
# easyocr's own downloader fetches and checks the English detection (CRAFT) and recognition
# models; the build fails if either file is missing afterwards.
RUN mkdir -p /var/lib/ams/easyocr \
    && python -c "import easyocr; easyocr.Reader(['en'], gpu=False, model_storage_directory='/var/lib/ams/easyocr', user_network_directory='/var/lib/ams/easyocr/user_network', download_enabled=True, verbose=False)" \
    && test -s /var/lib/ams/easyocr/craft_mlt_25k.pth \
    && test -s /var/lib/ams/easyocr/english_g2.pth \
    && chmod -R a+rX /var/lib/ams/easyocr
WORKDIR /app
COPY scripts/healthcheck.py scripts/healthcheck.py
USER 10001:10001
EXPOSE 9103
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "workers", "ocr"]
