"""``python -m workers <consumer>``: run one consumer until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from shared.config import Settings
from shared.errors import AmsError
from shared.logging import configure_logging, get_logger
from workers import registry

USAGE = "usage: python -m workers <consumer>"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in {"-h", "--help"}:
        known = ", ".join(sorted(registry.CONSUMERS)) or "none registered"
        sys.stderr.write(f"{USAGE}\nconsumers: {known}\n")
        return 2
    try:
        factory = registry.get(argv[0])
    except KeyError as exc:
        sys.stderr.write(f"{exc.args[0]}\n")
        return 2
    settings = Settings.from_env()
    configure_logging(settings, service=f"worker-{argv[0]}")
    try:
        asyncio.run(factory(settings).run(settings))
    except AmsError as exc:  # a start-up refusal (missing OCR models …): say why, no traceback
        get_logger("workers").error("worker_cannot_start", consumer=argv[0], error=str(exc))
        sys.stderr.write(f"worker {argv[0]} cannot start: {exc}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
