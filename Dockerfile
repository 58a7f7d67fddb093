# syntax=docker/dockerfile:1
# One image for every process of the system (the compose services differ by command).
# easyocr's English detection and recognition models are downloaded at build time into
# /models, so a container never reaches the network for them (OCR_ALLOW_DOWNLOADS stays off).
FROM python:3.11-slim

# Optional extra package index for the torch wheels (for example PyTorch's CPU-only index,
# which makes the image several GB smaller than the default CUDA build).
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OCR_MODEL_DIR=/models \
    EASYOCR_MODULE_PATH=/models \
    LOG_FORMAT=json

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Tesseract (the second OCR engine) with its English data; libglib for OpenCV.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# The heavy OCR stack first, in its own layer, so that code changes do not reinstall it.
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --extra-index-url "$TORCH_INDEX_URL" torch torchvision; \
    fi \
    && pip install "easyocr>=1.7"

# easyocr's own downloader fetches and checks the English detection (CRAFT) and
# recognition models; the build fails if either file is missing afterwards.
RUN mkdir -p /models \
    && python -c "import easyocr; easyocr.Reader(['en'], gpu=False, model_storage_directory='/models', user_network_directory='/models/user_network', download_enabled=True, verbose=False)" \
    && test -s /models/craft_mlt_25k.pth \
    && test -s /models/english_g2.pth \
    && chmod -R a+rX /models

WORKDIR /app
COPY . /app
RUN pip install "/app[ocr]" \
    && groupadd --gid 10001 ams \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin ams

# Not root: the numeric id so that runtimes can check it without /etc/passwd.
USER 10001:10001

# The API ports (auth 8002, users 8001, admin 8003) and the metrics ports (relay 9101,
# workers 9102-9105); each compose service picks its own command.
EXPOSE 8001 8002 8003 9101 9102 9103 9104 9105
CMD ["python", "-m", "amsctl", "--help"]
