"""The default install has no PyTorch: asking for easyocr there is refused with a clear reason."""

from __future__ import annotations

import importlib.util

import pytest

from shared.config import Settings
from workers.ocr_engines import EngineConfig, OcrModelsMissing, preflight


def test_default_engine_needs_no_pytorch() -> None:
    assert Settings().ocr.engine == "tesseract"


def test_easyocr_without_the_ocr_extra_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "easyocr" else real(name, *a)
    )
    config = EngineConfig(engine="easyocr", model_dir="/nowhere", languages=("en",), gpu=False,
                          allow_downloads=False, verify_checksums=True)
    with pytest.raises(OcrModelsMissing, match=r"easyocr is not installed.*make install-ocr"):
        preflight(config)
