"""Generate easyocr model files with the real architectures and random weights.

EasyOCR's published weights cannot be downloaded here, so the tests build the CRAFT
detector and the generation-2 recogniser from easyocr's own modules and save their
``state_dict`` under the names easyocr expects. The files differ from the published
ones, so the engine is run with ``verify_checksums=False`` (``OCR_VERIFY_CHECKSUMS``),
which pins easyocr's expected MD5 sums to these files while easyocr's own loading code
runs unchanged.

The detector's last layer is set to a constant (zero weights, bias 1.0): its region and
affinity scores are then high everywhere, so detection reliably finds the page as one
text box and recognition runs on it. Every other weight is random.
"""

from __future__ import annotations

from pathlib import Path


def write_easyocr_models(directory: Path, *, seed: int = 0) -> list[Path]:
    import torch
    from easyocr import config as eocfg
    from easyocr.craft import CRAFT
    from easyocr.model.vgg_model import Model

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    detector = CRAFT()
    last = detector.conv_cls[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 1.0)
    detector_path = directory / eocfg.detection_models["craft"]["filename"]
    # easyocr strips a leading "module." (DataParallel) prefix when present.
    torch.save(detector.state_dict(), detector_path)

    english = eocfg.recognition_models["gen2"]["english_g2"]
    num_class = len(english["characters"]) + 1  # + the CTC blank
    recogniser = Model(input_channel=1, output_channel=256, hidden_size=256, num_class=num_class)
    # easyocr's CPU loader drops the first 7 characters of each key ("module.").
    state = {f"module.{key}": value for key, value in recogniser.state_dict().items()}
    recogniser_path = directory / english["filename"]
    torch.save(state, recogniser_path)
    return [detector_path, recogniser_path]
