"""Generated documents with a known structure: the same page as a PNG, a PDF with a text
layer, a scanned (image-only) PDF, and a PDF mixing both.

The page (US letter, positions in PDF points): a heading over two columns; the left
column holds a paragraph and a bulleted list, the right one a paragraph and a small
table. :data:`EXPECTED` is its ground truth in reading order. The PNG is drawn with
DejaVu Sans (Debian's ``fonts-dejavu-core``, installed by ``scripts/install.sh``), the
PDF's text layer uses the standard Helvetica fonts every PDF reader has.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from pathlib import Path

import pypdfium2
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from tests.documents_support import write_pdf

PAGE_W, PAGE_H = 612, 792
DPI = 150


@dataclass(frozen=True)
class Text:
    x: float
    baseline: float
    text: str
    size: float
    bold: bool = False


HEADING = "Quarterly Report on Harbour Traffic"
LEFT = ["The harbour handled more ships this", "quarter than in any quarter before.",
        "Most of the growth came from small", "container vessels on coastal routes."]
ITEMS = ["Berth four was dredged", "Two cranes were replaced", "Night shifts were added"]
RIGHT = ["Waiting times fell by a third while", "the number of pilots stayed the same.",
         "The table below lists the busiest", "berths by ships handled."]
TABLE = [("Berth", "Ships", "Tons"), ("North", "412", "9100"), ("South", "388", "8700"),
         ("East", "251", "5300")]

EXPECTED: list[tuple[str, str]] = [
    ("heading", HEADING),
    ("paragraph", " ".join(LEFT)),
    *[("list_item", f"• {item}") for item in ITEMS],
    ("paragraph", " ".join(RIGHT)),
    ("table", "\n".join("\t".join(row) for row in TABLE)),
]
"""(kind, text) of every block in reading order."""


def _texts() -> list[Text]:
    out = [Text(54, 80, HEADING, 22, bold=True)]
    out += [Text(54, 130 + 16 * n, line, 12) for n, line in enumerate(LEFT)]
    for n, item in enumerate(ITEMS):
        out += [Text(62, 220 + 22 * n, "•", 12), Text(76, 220 + 22 * n, item, 12)]
    out += [Text(330, 130 + 16 * n, line, 12) for n, line in enumerate(RIGHT)]
    for n, row in enumerate(TABLE):
        out += [Text(x, 220 + 20 * n, cell, 12) for x, cell in zip((330, 430, 500), row,
                                                                    strict=True)]
    return out


FONTS = Path("/usr/share/fonts/truetype/dejavu")


@functools.cache
def font_file(bold: bool) -> str:
    path = FONTS / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: apt-get install fonts-dejavu-core "
                           "(scripts/install.sh does it when run as root)")
    return str(path)


def layout_image(dpi: int = DPI) -> Image.Image:
    scale = dpi / 72
    image = Image.new("RGB", (round(PAGE_W * scale), round(PAGE_H * scale)), "white")
    draw = ImageDraw.Draw(image)
    for t in _texts():
        font = ImageFont.truetype(font_file(t.bold), round(t.size * scale))
        draw.text((t.x * scale, t.baseline * scale), t.text, font=font, fill="black", anchor="ls")
    return image


def layout_png(dpi: int = DPI) -> bytes:
    out = io.BytesIO()
    layout_image(dpi).save(out, format="PNG")
    return out.getvalue()


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")  # WinAnsiEncoding: the bullet is byte 0x95
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def layout_text_pdf() -> bytes:
    """The page as a PDF whose text is a text layer (written by hand, Helvetica)."""
    return text_pdf(_texts())


def prose_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with a text layer: ``lines`` as one paragraph of 12 pt text."""
    return text_pdf([Text(72, 100 + 16 * n, line, 12) for n, line in enumerate(lines)])


def text_pdf(texts: list[Text]) -> bytes:
    """A one-page PDF whose ``texts`` are its text layer."""
    stream = b"".join(
        b"BT /%s %g Tf %g %g Td %s Tj ET\n" % (
            b"F2" if t.bold else b"F1", t.size, t.x, PAGE_H - t.baseline, _pdf_string(t.text))
        for t in texts
    )
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
    return write_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>" % (PAGE_W, PAGE_H),
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"endstream",
        font % b"Helvetica",
        font % b"Helvetica-Bold",
    ])


def layout_scan_pdf(dpi: int = DPI) -> bytes:
    """The page as a scan: one image per page, no text layer."""
    out = io.BytesIO()
    layout_image(dpi).convert("L").save(out, format="PDF", resolution=float(dpi))
    return out.getvalue()


def layout_mixed_pdf() -> bytes:
    """Page 1 with a text layer, page 2 a scan of the same page."""
    pdf = pypdfium2.PdfDocument(layout_text_pdf())
    scan = pypdfium2.PdfDocument(layout_scan_pdf())
    try:
        pdf.import_pages(scan)
        out = io.BytesIO()
        pdf.save(out)
        return out.getvalue()
    finally:
        scan.close()
        pdf.close()


PROSE = [
    "On 14 March 2026 the port authority published its figures for the first quarter:",
    "1,214 vessels called at the harbour, 9.5% more than a year before, and the mean",
    "waiting time at anchor fell from 31 to 22 hours. Container traffic (TEU) rose to",
    "48,730, while bulk cargo stayed flat at about 2.1 million tonnes.",
    "The new pilot boat, ordered in 2024, entered service in February; it cut the time",
    "a pilot needs to board by roughly a quarter. Dredging at berths 4 and 7 (depth now",
    "14.2 m) lets larger feeder ships call without waiting for the tide.",
    "Questions about these figures go to the statistics office, Quay Street 12, or to",
    "stats@port.example before 30 April.",
]
"""A page of plain prose with digits and punctuation, to measure character accuracy."""


def prose_png(dpi: int = DPI) -> bytes:
    scale = dpi / 72
    image = Image.new("RGB", (round(PAGE_W * scale), round(PAGE_H * scale)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(font_file(False), round(11 * scale))
    for n, line in enumerate(PROSE):
        y = 72 + 16 * n + (12 if n >= 4 else 0) + (12 if n >= 7 else 0)
        draw.text((54 * scale, y * scale), line, font=font, fill="black", anchor="ls")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def collapse(text: str) -> str:
    return " ".join(text.split())


def cer(expected: str, actual: str) -> float:
    """Character error rate: edit distance / expected length, whitespace runs as one space."""
    a, b = collapse(expected), collapse(actual)
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] / max(1, len(a))


def degraded(image: Image.Image, how: str, seed: int = 1) -> Image.Image:
    """``image`` as a worse scan: ``noise`` (2 % salt and pepper, then blurred) or ``skew``
    (turned by one degree)."""
    if how == "skew":
        return image.rotate(1, fillcolor="white")
    gray = image.convert("L")
    pixels = gray.load()
    rnd = random.Random(seed)
    for _ in range(gray.width * gray.height // 50):
        pixels[rnd.randrange(gray.width), rnd.randrange(gray.height)] = rnd.choice((0, 255))
    return gray.filter(ImageFilter.GaussianBlur(0.8)).convert("RGB")
