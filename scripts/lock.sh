#!/usr/bin/env bash
# Regenerate the lock files in requirements/ from pyproject.toml (`make lock`).
#   runtime.txt  the services' dependencies, every file pinned by hash
#   dev.txt      runtime + the dev extra (tests, linters), what `make test` installs
#   ocr.txt      the ocr extra's dependencies on top of runtime, without torch/torchvision
#                and their CUDA libraries (their build is chosen at install time)
# Run it after changing dependencies in pyproject.toml and commit the result; a unit test
# (tests/unit/test_lock.py) fails while pyproject.toml and the locks disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo .venv/bin/uv)}
common=(--universal --python-version 3.11 --generate-hashes --quiet
        --custom-compile-command "make lock" --index-url https://pypi.org/simple)

"$UV" pip compile "${common[@]}" pyproject.toml -o requirements/runtime.txt
"$UV" pip compile "${common[@]}" pyproject.toml --extra dev \
  -c requirements/runtime.txt -o requirements/dev.txt

# The CUDA-only packages torch pulls in on Linux from PyPI: left out, install.sh lets the
# chosen torch build bring what it needs.
full=$(mktemp)
trap 'rm -f "$full"' EXIT
"$UV" pip compile "${common[@]}" --no-header --no-annotate pyproject.toml --extra ocr \
  -c requirements/runtime.txt -c requirements/torch.txt -o "$full"
skip=(--no-emit-package torch --no-emit-package torchvision)
for name in $(grep -oE '^(nvidia-[a-z0-9-]+|triton|cuda-[a-z0-9-]+)==' "$full" | tr -d '='); do
  skip+=(--no-emit-package "$name")
done
"$UV" pip compile "${common[@]}" pyproject.toml --extra ocr "${skip[@]}" \
  -c requirements/runtime.txt -c requirements/torch.txt -o requirements/ocr.txt
echo "lock: requirements/runtime.txt, dev.txt, ocr.txt written"
