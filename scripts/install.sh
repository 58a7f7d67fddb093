#!/usr/bin/env bash
# Install the project into .venv from the lock files in requirements/ (hashes checked).
#
#   scripts/install.sh          runtime + dev tools: CPU only, no PyTorch (make run, make test)
#   scripts/install.sh --ocr    also the easyocr engine: PyTorch's CPU build by default
#   TORCH_VARIANT=cuda          with --ocr: PyPI's build of torch (CUDA on Linux x86_64, GBs)
#   TORCH_INDEX_URL=URL         with --ocr and the cpu variant: where the CPU wheels come from
#   VENV=path                   another virtualenv (default .venv)
#
# Regenerate the locks with `make lock` after changing pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
ocr=0
for arg in "$@"; do
  case "$arg" in
    --ocr) ocr=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
case "$TORCH_VARIANT" in
  cpu|cuda) ;;
  *) echo "install: TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 2 ;;
esac

# Tesseract: the OCR engine of the default install, whose language data Debian ships.
if ! command -v tesseract >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-eng >/dev/null) \
    || echo "install: tesseract-ocr could not be installed; the tesseract engine will be unavailable" >&2
fi

# promtool (Debian's prometheus package): the test suite checks and unit-tests the alert
# rules and the dashboard's queries with it (tests/unit/test_alerts.py).
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
    || echo "install: prometheus (promtool) could not be installed; tests/unit/test_alerts.py will fail" >&2
fi

# Chromium: the frontends' browser tests drive Debian's build with Playwright
# (tests/e2e/test_frontends.py); `playwright install` would download a browser of its own.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
    || echo "install: chromium could not be installed; tests/e2e/test_frontends.py will fail" >&2
fi

# iptables: the cluster harness's relay-netem scenario drops packets with it (tests/cluster;
# this kernel has no netem qdisc).
if ! command -v iptables >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null) \
    || echo "install: iptables could not be installed; make test-cluster's relay-netem scenario will fail" >&2
fi

# DejaVu Sans: the tests draw their generated pages with it.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null) \
    || echo "install: fonts-dejavu-core could not be installed; tests that draw pages will fail" >&2
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
"${pip[@]}" install -q --require-hashes --no-deps -r requirements/dev.txt
"${pip[@]}" install -q --no-deps -e .

if [ "$ocr" = 1 ]; then
  # torch and torchvision first, pinned by version (requirements/torch.txt): which file is
  # right depends on the build, so they are not in the hashed lock.
  if [ "$TORCH_VARIANT" = cpu ]; then
    "${pip[@]}" install -q --no-deps --index-url "$TORCH_INDEX_URL" -r requirements/torch.txt
  else
    "${pip[@]}" install -q -r requirements/torch.txt
  fi
  "${pip[@]}" install -q --require-hashes --no-deps -r requirements/ocr.txt
fi
"${pip[@]}" check >/dev/null || { "${pip[@]}" check >&2; exit 1; }
extra=""
if [ "$ocr" = 1 ]; then extra=", easyocr with torch ($TORCH_VARIANT)"; fi
echo "install: done ($("$VENV/bin/python" --version)$extra)"
