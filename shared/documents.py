"""Document formats: sniffing, limits and rasterisation, shared by the admin API and OCR worker.

The type of a document is decided from its first bytes only, never from its name or a
declared content type, and only the decoder of that allow-listed type is ever used (Pillow
is never left to guess among all its plugins). Limits are checked from headers before
anything is decoded, so a decompression bomb is refused without being expanded, and the
work of an inspection is bounded: pages are counted up to ``max_pages + 1`` and no further
(a TIFF with 20,000 directories costs what one with 51 costs). The API runs inspections
off its event loop (:class:`Inspector`).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pypdfium2
from PIL import Image, ImageSequence

from shared.errors import UnsupportedMediaType, ValidationFailed

PNG, JPEG, TIFF, PDF = "image/png", "image/jpeg", "image/tiff", "application/pdf"

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", PNG),
    (b"\xff\xd8\xff", JPEG),
    (b"II*\x00", TIFF),
    (b"MM\x00*", TIFF),
    (b"%PDF-", PDF),
)
EXTENSIONS = {PNG: "png", JPEG: "jpg", TIFF: "tiff", PDF: "pdf"}
"""The allow-list: media type -> extension of the stored name."""

_DECODERS = {PNG: ("PNG",), JPEG: ("JPEG",), TIFF: ("TIFF",)}
"""The one Pillow plugin allowed to open each sniffed image type."""

SNIFF_BYTES = 16
"""Bytes needed to recognise every allowed type."""


@dataclass(frozen=True)
class Limits:
    """Caps applied to every document, page by page."""

    max_pixels: int
    max_pages: int
    pdf_dpi: int


@dataclass(frozen=True)
class DocumentInfo:
    media_type: str
    pages: int


class UnreadableDocument(ValidationFailed):
    """The bytes have an allowed signature but cannot be decoded (corrupt, truncated)."""


def sniff(head: bytes) -> str:
    """Media type from the leading bytes; :class:`UnsupportedMediaType` otherwise."""
    for signature, media_type in _SIGNATURES:
        if head.startswith(signature):
            return media_type
    raise UnsupportedMediaType(
        "unsupported file type; allowed: PNG, JPEG, TIFF, PDF (decided from the content)"
    )


def inspect(content: bytes, limits: Limits) -> DocumentInfo:
    """Type and page count of ``content``; refuses disallowed types and broken limits."""
    media_type = sniff(content[:SNIFF_BYTES])
    if media_type == PDF:
        return DocumentInfo(media_type, _inspect_pdf(content, limits))
    return DocumentInfo(media_type, _inspect_image(content, media_type, limits))


@dataclass(frozen=True)
class Inspected:
    info: DocumentInfo
    sha256: str


class Inspector:
    """Runs :func:`inspect` (and the checksum) off the event loop, ``concurrency`` at a time.

    Its own threads, not the loop's default executor: a flood of uploads queues here and
    cannot take the threads other work (password hashing, sync handlers) needs.
    """

    _shared: Inspector | None = None

    def __init__(self, concurrency: int = 2) -> None:
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="inspect")

    @classmethod
    def shared(cls) -> Inspector:
        """One inspector per process for callers without their own (scripts, benchmarks)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    async def inspect(self, content: bytes, limits: Limits) -> Inspected:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _inspect_and_hash, content, limits)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _inspect_and_hash(content: bytes, limits: Limits) -> Inspected:
    return Inspected(inspect(content, limits), hashlib.sha256(content).hexdigest())


def _check_pixels(width: int, height: int, limits: Limits, where: str) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableDocument(f"{where} has no pixels")
    if width * height > limits.max_pixels:
        raise ValidationFailed(
            f"{where} is {width}x{height} pixels, more than the limit of {limits.max_pixels}"
        )


def _check_pages(pages: int, limits: Limits) -> None:
    if pages > limits.max_pages:
        raise ValidationFailed(
            f"document has {pages} pages, more than the limit of {limits.max_pages}"
        )


def _inspect_image(content: bytes, media_type: str, limits: Limits) -> int:
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's guard: these limits, not the last ones
    try:
        with _open_image(content, media_type) as image:  # reads the header only
            if media_type == PNG:
                # APNG: the frame count is in the acTL chunk and every frame is drawn on
                # the canvas, so the header says it all; seeking would decode frames.
                pages = int(getattr(image, "n_frames", 1))
                _check_pages(pages, limits)
                _check_pixels(image.width, image.height, limits, "image")
                return pages
            return _walk_frames(image, limits)
    except Image.DecompressionBombError as exc:
        raise ValidationFailed(
            f"image exceeds the pixel limit of {limits.max_pixels}: {exc}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableDocument(f"unreadable image: {exc}") from exc


def _walk_frames(image: Image.Image, limits: Limits) -> int:
    """Pages of a TIFF (or multi-picture JPEG), reading at most ``max_pages + 1`` directories.

    ``n_frames`` would walk every directory of the file first (quadratic in Pillow's TIFF
    reader: a 3 MB file of tiny pages held a process for seconds).
    """
    pages = 1
    _check_pixels(image.width, image.height, limits, "page 1")
    while True:
        try:
            image.seek(pages)
        except EOFError:
            return pages
        pages += 1
        if pages > limits.max_pages:
            raise ValidationFailed(
                f"document has more than {limits.max_pages} pages, the limit"
            )
        _check_pixels(image.width, image.height, limits, f"page {pages}")


def _open_image(content: bytes, media_type: str) -> Image.Image:
    return Image.open(io.BytesIO(content), formats=_DECODERS[media_type])


def _inspect_pdf(content: bytes, limits: Limits) -> int:
    try:
        pdf = pypdfium2.PdfDocument(content)
    except pypdfium2.PdfiumError as exc:
        raise UnreadableDocument(f"unreadable PDF: {exc}") from exc
    try:
        pages = len(pdf)
        if pages == 0:
            raise UnreadableDocument("PDF has no pages")
        _check_pages(pages, limits)
        for index in range(pages):
            width, height = pdf.get_page_size(index)
            scale = limits.pdf_dpi / 72
            _check_pixels(round(width * scale), round(height * scale), limits, f"page {index + 1}")
        return pages
    finally:
        pdf.close()


def rasterise(content: bytes, limits: Limits) -> Iterator[Image.Image]:
    """Decode ``content`` page by page into RGB images (PDF pages rendered at ``pdf_dpi``).

    Raises :class:`UnreadableDocument` for corrupt or truncated data.
    """
    info = inspect(content, limits)
    if info.media_type == PDF:
        yield from _render_pdf(content, limits)
        return
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's own bomb guard, same cap
    try:
        with _open_image(content, info.media_type) as image:
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                if index >= info.pages:
                    break
                yield frame.convert("RGB")
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise UnreadableDocument(f"unreadable image: {exc}") from exc


def pdf_scale(limits: Limits) -> float:
    """Pixels per PDF point of a rendered page."""
    return limits.pdf_dpi / 72


def render_page(page: pypdfium2.PdfPage, index: int, limits: Limits) -> Image.Image:
    """One PDF page as an RGB image at ``pdf_dpi``."""
    try:
        image: Image.Image = page.render(scale=pdf_scale(limits)).to_pil().convert("RGB")
    except pypdfium2.PdfiumError as exc:
        raise UnreadableDocument(f"unreadable PDF page {index + 1}: {exc}") from exc
    return image


def _render_pdf(content: bytes, limits: Limits) -> Iterator[Image.Image]:
    pdf = pypdfium2.PdfDocument(content)
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                yield render_page(page, index, limits)
            finally:
                page.close()
    finally:
        pdf.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_TYPES = {"png": PNG, "jpg": JPEG, "jpeg": JPEG, "jpe": JPEG, "tif": TIFF, "tiff": TIFF,
               "pdf": PDF}


def check_name(name: str | None, media_type: str) -> None:
    """:class:`UnsupportedMediaType` when the file name's extension says another type than
    the content (a name without an extension is fine: the content decides)."""
    base = re.split(r"[/\\]", name or "")[-1]
    if "." not in base.strip("."):
        return
    extension = base.rsplit(".", 1)[1].lower()
    if _NAME_TYPES.get(extension) != media_type:
        raise UnsupportedMediaType(
            f"the file name ends in .{extension[:16]} but the content is "
            f"{EXTENSIONS[media_type].upper()}: rename the file or upload the one you meant"
        )


def safe_filename(name: str | None, media_type: str) -> str:
    """A stored name that is safe anywhere: no path, ASCII, bounded, sniffed extension."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = _UNSAFE.sub("_", stem).strip("._-")[:100] or "document"
    return f"{stem}.{EXTENSIONS[media_type]}"
