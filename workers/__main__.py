"""``python -m workers <consumer> [--partition I]``: run one consumer until SIGTERM.

With ``WORKER_PARTITIONS`` > 1 (and no ``--partition``), this process supervises one
process per partition (:mod:`workers.runtime.partitions`); ``--partition I`` runs partition I
alone, which is what the supervisor starts.
"""

from __future__ import annotations

import argparse
import sys

from shared import eventloop
from shared.config import settings_or_exit
from shared.errors import AmsError
from shared.logging import configure_logging, get_logger
from shared.tracing import configure_tracing
from workers import registry
from workers.runtime.partitions import EXIT_CANNOT_START, supervise


def _parser() -> argparse.ArgumentParser:
    known = ", ".join(sorted(registry.CONSUMERS)) or "none registered"
    parser = argparse.ArgumentParser(
        prog="python -m workers", description=f"Run one consumer. Consumers: {known}."
    )
    parser.add_argument("consumer", help=f"one of: {known}")
    parser.add_argument(
        "--partition", type=int, default=None, metavar="I",
        help="run only partition I of a partitioned consumer (WORKER_PARTITIONS > 1)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        factory = registry.get(args.consumer)
    except KeyError as exc:
        sys.stderr.write(f"{exc.args[0]}\n")
        return 2
    settings = settings_or_exit(f"worker-{args.consumer}")
    suffix = "" if args.partition is None else f"-p{args.partition}"
    configure_logging(settings.observability, service=f"worker-{args.consumer}{suffix}")
    configure_tracing(settings.observability, service=f"worker-{args.consumer}")
    try:
        consumer = factory(settings)
        partitions = consumer.spec_for(settings).partitions
        if args.partition is None and partitions > 1:
            return supervise(args.consumer, partitions, settings.worker)
        partition = args.partition or 0
        if not 0 <= partition < partitions:
            parser.error(f"{args.consumer} has partitions 0 to {partitions - 1}")
        eventloop.run(consumer.run(settings, partition))
    except AmsError as exc:  # a start-up refusal (missing OCR models …): say why, no traceback
        get_logger("workers").error("worker_cannot_start", consumer=args.consumer, error=str(exc))
        sys.stderr.write(f"worker {args.consumer} cannot start: {exc}\n")
        return EXIT_CANNOT_START
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
