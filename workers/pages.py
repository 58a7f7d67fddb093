"""A document's pages as structure: PDF text layers read directly, everything else OCR-ed.

Runs inside an OCR process. Images (PNG, JPEG, TIFF frames) are recognised by the
engine. A PDF page with a text layer is read from it (:mod:`workers.text_layer`: exact
and much faster); a page without one (a scan) is rendered at ``OCR_PDF_DPI`` and
recognised. One document may mix both; every page says where its text came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pypdfium2

from shared.documents import (
    PDF,
    Limits,
    UnreadableDocument,
    inspect,
    pdf_scale,
    rasterise,
    render_page,
)
from shared.layout import PageLayout, Source
from workers.ocr_engines import OcrEngine
from workers.text_layer import has_text_layer, read_text_layer


def read_pages(content: bytes, limits: Limits, engine: OcrEngine) -> Iterator[PageLayout]:
    """Every page of ``content`` in order; raises ``ValidationFailed`` for bad documents."""
    if inspect(content, limits).media_type == PDF:
        yield from _pdf_pages(content, limits, engine)
        return
    for number, image in enumerate(rasterise(content, limits), start=1):
        yield PageLayout(page_no=number, width=image.width, height=image.height,
                         source=Source.OCR, scale=1.0, blocks=engine.analyse(image))


def _pdf_pages(content: bytes, limits: Limits, engine: OcrEngine) -> Iterator[PageLayout]:
    scale = pdf_scale(limits)
    pdf = pypdfium2.PdfDocument(content)
    try:
        for index in range(len(pdf)):
            yield _pdf_page(pdf, index, limits, engine, scale)
    finally:
        pdf.close()


def _pdf_page(pdf: pypdfium2.PdfDocument, index: int, limits: Limits, engine: OcrEngine,
              scale: float) -> PageLayout:
    page = pdf[index]
    try:
        textpage = page.get_textpage()
    except pypdfium2.PdfiumError as exc:
        page.close()
        raise UnreadableDocument(f"unreadable PDF page {index + 1}: {exc}") from exc
    try:
        width, height = page.get_size()  # rendered as ceil(points x scale), so sized alike
        if has_text_layer(page, textpage):
            return PageLayout(
                page_no=index + 1, width=math.ceil(width * scale), height=math.ceil(height * scale),
                source=Source.TEXT_LAYER, scale=scale,
                blocks=read_text_layer(page, textpage, scale),
            )
        image = render_page(page, index, limits)
        return PageLayout(page_no=index + 1, width=image.width, height=image.height,
                          source=Source.OCR, scale=scale, blocks=engine.analyse(image))
    finally:
        textpage.close()
        page.close()
