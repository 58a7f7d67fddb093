"""OCR engines: one Protocol, easyocr (default), tesseract, and a fake for tests.

An engine turns one page image into blocks in reading order (``shared.layout``): tesseract
reports blocks, paragraphs, lines and words itself (the levels of its TSV output), which
:func:`shared.layout.refine_blocks` splits at list items and orders; easyocr reports line
fragments, whose words :func:`shared.layout.group_lines` groups by geometry. Engines are
built from an :class:`EngineConfig` (picklable) inside the OCR process, so each process
loads its model once.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from shared.config import Settings
from shared.errors import TransientError
from shared.layout import Block, Kind, Line, Word, group_lines, refine_blocks
from shared.layout.grouping import split_words
from shared.layout.model import make_block, make_line, make_paragraph


class OcrEngine(Protocol):
    name: str

    def analyse(self, image: Image.Image) -> list[Block]:
        """The blocks of one page in reading order, with their kinds."""
        ...


class OcrModelsMissing(TransientError):
    """Model files are missing or rejected; the message says which and where it looked.

    Transient for a message (providing the files fixes it), fatal at worker start-up.
    """


@dataclass(frozen=True)
class EngineConfig:
    """Everything an OCR process needs to build its engine (settings are not picklable-safe)."""

    engine: str
    model_dir: str
    languages: tuple[str, ...]
    gpu: bool
    allow_downloads: bool
    verify_checksums: bool
    fake_delay_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        languages = tuple(x.strip() for x in settings.ocr_languages.split(",") if x.strip())
        return cls(
            engine=settings.ocr_engine,
            model_dir=settings.ocr_model_dir,
            languages=languages or ("en",),
            gpu=settings.ocr_gpu,
            allow_downloads=settings.ocr_allow_downloads,
            verify_checksums=settings.ocr_verify_checksums,
        )


def build_engine(config: EngineConfig) -> OcrEngine:
    """The configured engine, loaded (may take seconds for easyocr)."""
    if config.engine == "easyocr":
        return EasyOcrEngine(config)
    if config.engine == "tesseract":
        return TesseractEngine(config.languages)
    if config.engine == "fake":
        return FakeEngine(delay_s=config.fake_delay_s)
    raise ValueError(f"unknown OCR engine {config.engine!r}; expected easyocr or tesseract")


def preflight(config: EngineConfig) -> None:
    """Cheap start-up check (no model loading): raises :class:`OcrModelsMissing`."""
    if config.engine == "easyocr":
        if importlib.util.find_spec("easyocr") is None:
            raise OcrModelsMissing(
                "OCR_ENGINE=easyocr, but easyocr is not installed: install the ocr extra "
                "(`make install-ocr`, docs/ocr.md) or set OCR_ENGINE=tesseract"
            )
        missing = easyocr_missing_files(config)
        if missing and not config.allow_downloads:
            raise OcrModelsMissing(_missing_message(config, missing))
    elif config.engine == "tesseract":
        TesseractEngine.check(config.languages)


# --- easyocr ------------------------------------------------------------------------------
DETECTOR = "craft"


def easyocr_recognition_model(languages: tuple[str, ...]) -> str:
    """Name of the easyocr recognition model for ``languages`` (easyocr's own choice)."""
    if list(languages) == ["en"]:
        return "english_g2"
    return "latin_g2"


def easyocr_model_files(config: EngineConfig) -> list[Path]:
    from easyocr import config as eocfg  # noqa: PLC0415

    directory = Path(config.model_dir)
    recogniser = eocfg.recognition_models["gen2"][easyocr_recognition_model(config.languages)]
    return [
        directory / eocfg.detection_models[DETECTOR]["filename"],
        directory / recogniser["filename"],
    ]


def easyocr_missing_files(config: EngineConfig) -> list[Path]:
    return [path for path in easyocr_model_files(config) if not path.is_file()]


def _missing_message(config: EngineConfig, missing: list[Path]) -> str:
    names = ", ".join(path.name for path in missing)
    return (
        f"easyocr model files missing: {names}; looked in {config.model_dir} (OCR_MODEL_DIR); "
        "downloads are disabled (OCR_ALLOW_DOWNLOADS=false). See docs/ocr.md to provide them."
    )


@contextlib.contextmanager
def _pinned_checksums(model_dir: str) -> Iterator[None]:
    """Let easyocr accept the model files present in ``model_dir`` as they are.

    easyocr compares every model file with the MD5 sum it publishes for its own weights
    (``easyocr.config``). For weights of our own (fine-tuned, or generated by the tests)
    ``OCR_VERIFY_CHECKSUMS=false`` pins the expected sums to the files' actual sums for
    the duration of the load: easyocr's own loading code runs unchanged, and its download
    path is never taken because the files exist.
    """
    from easyocr import easyocr as eo  # noqa: PLC0415
    from easyocr.utils import calculate_md5  # noqa: PLC0415

    def pin(entry: dict[str, Any]) -> None:
        path = os.path.join(model_dir, entry["filename"])
        if os.path.isfile(path):
            entry["md5sum"] = calculate_md5(path)

    saved = eo.detection_models, eo.recognition_models
    detection, recognition = copy.deepcopy(saved[0]), copy.deepcopy(saved[1])
    for entry in detection.values():
        pin(entry)
    for generation in recognition.values():
        for entry in generation.values():
            pin(entry)
    eo.detection_models, eo.recognition_models = detection, recognition
    try:
        yield
    finally:
        eo.detection_models, eo.recognition_models = saved


class EasyOcrEngine:
    """easyocr's CRAFT detector + CRNN recogniser, loaded once from ``model_dir``."""

    name = "easyocr"

    def __init__(self, config: EngineConfig) -> None:
        import easyocr  # noqa: PLC0415

        missing = easyocr_missing_files(config)
        if missing and not config.allow_downloads:
            raise OcrModelsMissing(_missing_message(config, missing))
        pinned = contextlib.nullcontext() if config.verify_checksums else _pinned_checksums(
            config.model_dir
        )
        try:
            with pinned:
                self._reader = easyocr.Reader(
                    list(config.languages),
                    gpu=config.gpu,
                    model_storage_directory=config.model_dir,
                    user_network_directory=config.model_dir,
                    download_enabled=config.allow_downloads,
                    verbose=False,
                )
        except FileNotFoundError as exc:  # easyocr's words: missing, or MD5 mismatch
            raise OcrModelsMissing(
                f"easyocr refused its model files: {exc}; looked in {config.model_dir} "
                "(OCR_MODEL_DIR). Use easyocr's published weights or set "
                "OCR_VERIFY_CHECKSUMS=false for weights of your own. See docs/ocr.md."
            ) from exc

    def analyse(self, image: Image.Image) -> list[Block]:
        import numpy as np  # noqa: PLC0415

        results = self._reader.readtext(np.asarray(image.convert("RGB")))
        return group_lines(easyocr_fragments(results))


def easyocr_fragments(results: list[tuple[Any, str, float]]) -> list[Line]:
    """easyocr's ``(corners, text, confidence)`` as line fragments with estimated word boxes.

    easyocr boxes a run of words, not each word: a word's box is the run's box cut in
    proportion to the characters before it (an estimate, exact at the ends).
    """
    fragments = []
    for corners, text, confidence in results:
        xs, ys = [float(p[0]) for p in corners], [float(p[1]) for p in corners]
        words = split_words(str(text), [min(xs), min(ys), max(xs), max(ys)], float(confidence))
        if words:
            fragments.append(make_line(words))
    return fragments


# --- tesseract ------------------------------------------------------------------------------
_TESSERACT_LANGS = {"en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita"}


class TesseractEngine:
    """Debian's ``tesseract-ocr`` through pytesseract; words grouped into lines."""

    name = "tesseract"

    def __init__(self, languages: tuple[str, ...]) -> None:
        self.check(languages)
        self._lang = "+".join(_TESSERACT_LANGS.get(x, x) for x in languages)

    @staticmethod
    def check(languages: tuple[str, ...]) -> None:
        import pytesseract  # noqa: PLC0415

        try:
            available = set(pytesseract.get_languages(config=""))
        except (pytesseract.TesseractNotFoundError, OSError) as exc:
            raise OcrModelsMissing(
                "tesseract binary not found on PATH (apt-get install tesseract-ocr)"
            ) from exc
        wanted = {_TESSERACT_LANGS.get(x, x) for x in languages}
        if missing := sorted(wanted - available):
            raise OcrModelsMissing(
                f"tesseract language data missing: {', '.join(missing)} "
                f"(apt-get install tesseract-ocr-<lang>); available: {sorted(available)}"
            )

    def analyse(self, image: Image.Image) -> list[Block]:
        import pytesseract  # noqa: PLC0415

        data = pytesseract.image_to_data(
            image, lang=self._lang, output_type=pytesseract.Output.DICT
        )
        return refine_blocks(tesseract_blocks(data))


def tesseract_blocks(data: dict[str, list[Any]]) -> list[Block]:
    """Blocks, paragraphs, lines and words of tesseract's ``image_to_data`` (its TSV levels).

    Only word rows (level 5) carry text; the block, paragraph and line numbers say where
    each word belongs. Words tesseract did not recognise (confidence -1) or that are blank
    are left out, and so are levels left empty by that.
    """
    tree: dict[int, dict[int, dict[int, list[Word]]]] = {}
    for i, text in enumerate(data["text"]):
        confidence = float(data["conf"][i])
        if int(data["level"][i]) != 5 or confidence < 0 or not str(text).strip():
            continue
        left, top = float(data["left"][i]), float(data["top"][i])
        word = Word(
            text=str(text).strip(), confidence=round(confidence / 100, 4),
            bbox=[left, top, left + float(data["width"][i]), top + float(data["height"][i])],
        )
        paragraphs = tree.setdefault(int(data["block_num"][i]), {})
        lines = paragraphs.setdefault(int(data["par_num"][i]), {})
        lines.setdefault(int(data["line_num"][i]), []).append(word)
    return [
        make_block(Kind.PARAGRAPH, [
            make_paragraph([make_line(words) for words in lines.values()])
            for lines in paragraphs.values()
        ])
        for paragraphs in tree.values()
    ]


# --- fake -------------------------------------------------------------------------------------
class FakeEngine:
    """Deterministic engine for tests and benchmarks: one line describing the page."""

    name = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self._delay_s = delay_s

    def analyse(self, image: Image.Image) -> list[Block]:
        if self._delay_s:
            time.sleep(self._delay_s)
        w, h = image.size
        line = make_line(split_words(f"page {w}x{h}", [0.0, 0.0, float(w), float(h)], 1.0))
        return [make_block(Kind.PARAGRAPH, [make_paragraph([line])])]
