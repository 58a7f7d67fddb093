"""Documents the tests render: text images, PDFs, bombs, corrupt files."""

from __future__ import annotations

import io
import struct
import zlib

import pypdfium2
from PIL import Image, ImageDraw, ImageFont


def text_png(text: str, size: tuple[int, int] = (900, 160)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 40), text, fill="black", font=ImageFont.load_default(size=48))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def text_page_png(lines: tuple[str, ...] | list[str], size: tuple[int, int] = (1000, 520)) -> bytes:
    """A page with one line of large text per entry, well apart (an OCR engine finds each)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for index, line in enumerate(lines):
        draw.text((60, 50 + index * 110), line, fill="black", font=font)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def image_bytes(fmt: str, size: tuple[int, int] = (64, 32)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "white").save(out, format=fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(image_bytes("PNG", (1, 1)))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def pdf_with_pages(pages: int, size: tuple[float, float] = (200, 100)) -> bytes:
    pdf = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(*size)
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


def truncated_png() -> bytes:
    """Valid signature and header, pixel data cut off: passes upload checks, fails OCR."""
    return text_png("cut")[:120]


def tiff_of_pages(pages: int) -> bytes:
    """A TIFF of ``pages`` 1x1 bilevel pages, 102 bytes of directory each, all sharing one
    strip (written by hand: Pillow's own multi-page writer is quadratic in the pages)."""
    tags = [(256, 1), (257, 1), (258, 1), (259, 1), (262, 0), (273, 8), (278, 1), (279, 1)]
    out = bytearray(b"II*\x00" + struct.pack("<I", 9) + b"\x00")  # header, then the strip
    for page in range(pages):
        out += struct.pack("<H", len(tags))
        for tag, value in tags:
            out += struct.pack("<HHII", tag, 3 if tag != 273 else 4, 1, value)
        last = page == pages - 1
        out += struct.pack("<I", 0 if last else len(out) + 4)
    return bytes(out)


def apng_of_frames(frames: int, size: tuple[int, int] = (1, 1)) -> bytes:
    images = [Image.new("L", size, i % 256) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="PNG", save_all=True, append_images=images[1:])
    return out.getvalue()


def jpeg_signature_pcd_body() -> bytes:
    """Starts like a JPEG, but only Pillow's Kodak PhotoCD decoder can read it: a file of
    a type outside the allow-list, smuggled in behind an allowed signature."""
    return b"\xff\xd8\xff" + b"\0" * 2045 + b"PCD_IPI" + b"\0" * 12_288


def pdf_bomb(inflated_mb: int = 300) -> bytes:
    """A one-page PDF of a few hundred KB whose content stream inflates to ``inflated_mb`` MB
    of drawing operators (each becomes a path object when the page is loaded)."""
    ops = b"0 0 m 1 1 l S\n"
    body = zlib.compress(ops * (inflated_mb * 1024 * 1024 // len(ops)), 9)
    return write_pdf([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(body) + body + b"\nendstream",
    ])


def write_pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first the catalog) with its cross-reference
    table: what a hand-written test document needs to open in any reader."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)
