#!/usr/bin/env bash
# Install everything the project needs into .venv, from scratch when .venv is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Tesseract: the second OCR engine, the one whose language data Debian ships.
if ! command -v tesseract >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null) \
    || echo "install: tesseract-ocr could not be installed; the tesseract engine will be unavailable" >&2
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,ocr]'
echo "install: done ($(.venv/bin/python --version))"
