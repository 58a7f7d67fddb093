"""Document formats: sniffing, limits and rasterisation, shared by the admin API and OCR worker.

The type of a document is decided from its first bytes only, never from its name or a
declared content type. Limits are checked from headers before anything is decoded, so
a decompression bomb is refused without being expanded.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterator
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
    return DocumentInfo(media_type, _inspect_image(content, limits))


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


def _inspect_image(content: bytes, limits: Limits) -> int:
    Image.MAX_IMAGE_PIXELS = limits.max_pixels  # Pillow's guard: these limits, not the last ones
    try:
        with Image.open(io.BytesIO(content)) as image:  # reads the header only
            pages = getattr(image, "n_frames", 1)
            _check_pages(pages, limits)
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                _check_pixels(frame.width, frame.height, limits, f"page {index + 1}")
            return int(pages)
    except Image.DecompressionBombError as exc:
        raise ValidationFailed(
            f"image exceeds the pixel limit of {limits.max_pixels}: {exc}"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableDocument(f"unreadable image: {exc}") from exc


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
        with Image.open(io.BytesIO(content)) as image:
            for frame in ImageSequence.Iterator(image):
                yield frame.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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


def safe_filename(name: str | None, media_type: str) -> str:
    """A stored name that is safe anywhere: no path, ASCII, bounded, sniffed extension."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = _UNSAFE.sub("_", stem).strip("._-")[:100] or "document"
    return f"{stem}.{EXTENSIONS[media_type]}"
