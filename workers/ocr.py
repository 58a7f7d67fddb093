"""OCR worker: ``document.uploaded`` -> processing -> OCR -> completed | failed.

How the job fits the runtime's one-transaction-per-message model: OCR takes seconds,
so no transaction may stay open around it. The handler therefore works in three steps:

1. **claim** in its own short transaction (own session): ``pending`` -> ``processing``,
   ``attempts + 1`` (the claim token) and ``claimed_at``. A finished (completed/failed)
   or deleted document is skipped: a redelivery never runs a finished job twice. A
   document claimed by someone else less than a lease ago is *in progress*: the message
   is retried later (TransientError) instead of OCR-ing twice.
2. **OCR** in the process pool with a timeout, outside any transaction.
3. **store** in the runtime's transaction (``session``): pages, lines, the status and the
   follow-up event, together with the runtime's inbox row, only if the claim token is
   still ours. A crash between 2 and 3 leaves ``processing``; once the lease expires the
   redelivered message claims again.

Corrupt files, limits and timeouts end as ``failed`` with a reason (no retry). Transient
errors release the claim and retry; after ``MAX_ATTEMPTS`` claims the document fails.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.admin import ocr
from apps.admin.services import UploadLimits
from shared.config import Settings
from shared.db import session_factory
from shared.errors import TransientError, ValidationFailed
from shared.events import DocumentOcrCompleted, DocumentOcrFailed, DocumentUploaded
from shared.layout import PageLayout, summarise
from shared.logging import get_logger
from shared.topology import consumer_spec
from workers.ocr_engines import EngineConfig, preflight
from workers.ocr_pool import OcrCrashed, OcrRunner, ProcessOcrRunner
from workers.runtime.consumer import Consumer
from workers.runtime.context import MessageContext
from workers.runtime.sessions import runtime_engine

log = get_logger(__name__)

MAX_ATTEMPTS = 5
"""Claims of one document before it fails for good (transient failures: a database away)."""

CRASHES_BEFORE_FAILING = 2
"""A document on which the OCR process died this many times (one retry) fails for good."""


class OcrJob:
    """Handler of ``document.uploaded``; register ``job.handle`` with the consumer runtime."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], runner: OcrRunner, *, lease_s: float
    ) -> None:
        self._sessions, self._runner, self._lease_s = sessions, runner, lease_s

    async def handle(
        self, session: AsyncSession, message: DocumentUploaded, ctx: MessageContext
    ) -> None:
        """Process one uploaded document; effects and follow-up event commit with ``session``."""
        claim = await self.claim(message)
        if claim is None:
            return
        if claim.token > MAX_ATTEMPTS:
            await finish_failed(session, ctx, claim, f"gave up after {MAX_ATTEMPTS} attempts")
            return
        try:
            pages = await self._runner.run(claim.content)
        except ValidationFailed as exc:  # corrupt, over a limit, timed out: fails for good
            await finish_failed(session, ctx, claim, str(exc))
        except OcrCrashed as exc:
            if claim.token >= CRASHES_BEFORE_FAILING:
                await finish_failed(session, ctx, claim, f"{exc} on each of {claim.token} tries")
                return
            await self.release(claim)
            raise
        except TransientError:
            await self.release(claim)
            raise
        else:
            await finish_completed(session, ctx, claim, pages, self._runner.engine_name)

    async def claim(self, message: DocumentUploaded) -> ocr.Claim | None:
        """Step 1, own short transaction: take the job, or None if nothing is left to do."""
        async with self._sessions() as session, session.begin():
            claim = await ocr.claim(
                session, message.document_id, message.owner_id, lease_s=self._lease_s
            )
        if claim is not None:
            log.info("ocr_claimed", document_id=str(message.document_id), attempt=claim.token)
        return claim

    async def release(self, claim: ocr.Claim) -> None:
        """Give a claim back after a transient failure so that the retry can take it at once."""
        async with self._sessions() as session, session.begin():
            await ocr.release(session, claim)


async def finish_completed(
    session: AsyncSession, ctx: MessageContext, claim: ocr.Claim, pages: list[PageLayout],
    engine: str,
) -> None:
    """Step 3 (success): results, status ``completed`` and ``document.ocr_completed``."""
    if not await ocr.finish_completed(session, claim, pages, engine):
        log.info("ocr_result_discarded", document_id=str(claim.document_id))
        return
    summary = summarise(pages)
    await ctx.emit(
        session,
        DocumentOcrCompleted(
            document_id=claim.document_id, owner_id=claim.owner_id, engine=engine,
            pages=summary.pages, words=summary.words, mean_confidence=summary.mean_confidence,
            sources=summary.sources,
        ),
    )
    log.info("ocr_completed", document_id=str(claim.document_id), pages=len(pages))


async def finish_failed(
    session: AsyncSession, ctx: MessageContext, claim: ocr.Claim, reason: str
) -> None:
    """Step 3 (failure): status ``failed`` with the reason and ``document.ocr_failed``."""
    reason = reason[: ocr.REASON_MAX]
    if not await ocr.finish_failed(session, claim, reason):
        return
    await ctx.emit(
        session,
        DocumentOcrFailed(document_id=claim.document_id, owner_id=claim.owner_id, reason=reason),
    )
    log.info("ocr_failed", document_id=str(claim.document_id), reason=reason)


# --- the consumer ------------------------------------------------------------------------------
def consumer(settings: Settings) -> Consumer:
    """The ``ocr`` consumer (admindb): checks the models and warms the pool before taking
    messages, and closes the pool at the end."""
    engine_config = EngineConfig.from_settings(settings.ocr)
    runner = ProcessOcrRunner(
        engine_config, UploadLimits.from_settings(settings).document,
        workers=settings.ocr.workers, timeout_s=settings.ocr.timeout_s,
        memory_limit_mb=settings.ocr.memory_limit_mb,
    )
    # batch_max=1: one message per transaction, begun only after the OCR (the runtime
    # writes the inbox row after the handler), so no transaction stays open during OCR.
    engine = runtime_engine(settings, "admindb", batch_max=1)
    # The lease outlives the timeout: a claim is only taken over once its OCR is surely over.
    job = OcrJob(session_factory(engine), runner, lease_s=settings.ocr.timeout_s + 30)

    async def ready() -> None:
        preflight(engine_config)  # missing models: fail now, naming them, not per message
        await runner.warm_up()
        log.info("ocr_engine_ready", engine=engine_config.engine, workers=settings.ocr.workers)

    # Prefetch: enough to keep every OCR process busy, not so many that one worker holds
    # jobs another one could run. Not partitioned: OCR scales with OCR_WORKERS.
    return Consumer(
        consumer_spec("ocr"), {DocumentUploaded: job.handle},
        prefetch=2 * max(1, settings.ocr.workers), batch_max=1, engine=engine,
        on_start=(ready,), on_stop=(runner.close,),
    )
