from __future__ import annotations

import pytest
from PIL import TiffImagePlugin

from shared.documents import (
    JPEG,
    PDF,
    PNG,
    TIFF,
    Limits,
    UnreadableDocument,
    inspect,
    rasterise,
    safe_filename,
)
from shared.errors import UnsupportedMediaType, ValidationFailed
from tests.documents_support import (
    apng_of_frames,
    image_bytes,
    jpeg_signature_pcd_body,
    pdf_with_pages,
    png_claiming,
    tiff_of_pages,
    truncated_png,
)

LIMITS = Limits(max_pixels=1_000_000, max_pages=3, pdf_dpi=72)


@pytest.mark.parametrize(("fmt", "media_type"), [("PNG", PNG), ("JPEG", JPEG), ("TIFF", TIFF)])
def test_images_are_sniffed_from_content(fmt: str, media_type: str) -> None:
    info = inspect(image_bytes(fmt), LIMITS)
    assert (info.media_type, info.pages) == (media_type, 1)


def test_pdf_pages_are_counted() -> None:
    info = inspect(pdf_with_pages(2), LIMITS)
    assert (info.media_type, info.pages) == (PDF, 2)
    assert [im.size for im in rasterise(pdf_with_pages(2), LIMITS)] == [(200, 100), (200, 100)]


@pytest.mark.parametrize(
    "content", [b"GIF89a....", b"<html><script>", b"", b"PK\x03\x04zip", b"MZ\x90\x00exe"]
)
def test_other_types_are_refused(content: bytes) -> None:
    with pytest.raises(UnsupportedMediaType):
        inspect(content, LIMITS)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(ValidationFailed, match="pixel limit"):
        inspect(png_claiming(100_000, 100_000), LIMITS)


def test_pixel_cap_below_pillows_own_guard() -> None:
    with pytest.raises(ValidationFailed, match="2000x1000 pixels, more than the limit"):
        inspect(png_claiming(2000, 1000), LIMITS)


def test_pdf_page_cap() -> None:
    with pytest.raises(ValidationFailed, match="4 pages, more than the limit of 3"):
        inspect(pdf_with_pages(4), LIMITS)


def test_corrupt_pdf_is_unreadable() -> None:
    with pytest.raises(UnreadableDocument):
        inspect(b"%PDF-1.7\nnot really a pdf", LIMITS)


def test_truncated_image_passes_inspection_but_fails_rasterising() -> None:
    assert inspect(truncated_png(), LIMITS).media_type == PNG
    with pytest.raises(UnreadableDocument):
        list(rasterise(truncated_png(), LIMITS))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd.png"),
        ("C:\\Users\\x\\scan.exe", "scan.png"),
        ("rapport d'été.pdf", "rapport_d_ete.png"),
        ("", "document.png"),
        (".htaccess", "document.png"),
        ("a" * 300 + ".png", "a" * 100 + ".png"),
    ],
)
def test_safe_filenames(name: str, expected: str) -> None:
    assert safe_filename(name, PNG) == expected


def test_page_count_stops_at_the_limit_plus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TIFF of 20,000 tiny pages costs what one of max_pages + 1 costs: Pillow's
    ``n_frames`` walked every directory (quadratically: 3.3 MB held the API for 11 s)."""
    directories_read = 0
    real_seek = TiffImagePlugin.TiffImageFile._seek

    def counting_seek(self: TiffImagePlugin.TiffImageFile, frame: int) -> None:
        nonlocal directories_read
        directories_read += 1
        real_seek(self, frame)

    monkeypatch.setattr(TiffImagePlugin.TiffImageFile, "_seek", counting_seek)
    with pytest.raises(ValidationFailed, match="more than 3 pages"):
        inspect(tiff_of_pages(20_000), LIMITS)
    assert directories_read <= LIMITS.max_pages + 1
    assert inspect(tiff_of_pages(3), LIMITS).pages == 3


def test_animated_png_frames_are_pages_counted_from_its_header() -> None:
    with pytest.raises(ValidationFailed, match="20000 pages"):
        inspect(apng_of_frames(20_000), LIMITS)
    assert inspect(apng_of_frames(3), LIMITS).pages == 3
    assert len(list(rasterise(apng_of_frames(3), LIMITS))) == 3


def test_only_the_decoder_of_the_sniffed_type_is_used() -> None:
    """Pillow would fall back to any of its plugins (here Kodak PhotoCD) behind a JPEG
    signature; only the JPEG decoder may read what was sniffed as JPEG."""
    with pytest.raises(UnreadableDocument):
        inspect(jpeg_signature_pcd_body(), LIMITS)
