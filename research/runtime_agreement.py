"""Do a bundle's verdicts depend on the runtime that serves it?

    python -m research.runtime_agreement [BUNDLE]       # default: models/default; ~1 min

Scores the bundle's recorded test split (``test_split.txt``, paths under ../shared/datasets)
once on ONNX Runtime and once on OpenVINO, with the same decoding, and prints how far the
probabilities move and how many photos change label or band. `inference.runtime: auto` serves a
bundle whose recipe names OpenVINO on ONNX Runtime where the CPU has no VNNI; this measures what
that costs in agreement on the machine it runs on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ai_photo_detector.cli.file_predictions import predict_files
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.model.runtimes import cpu_has_vnni
from ai_photo_detector.settings import Settings
from research.transfer_study import DATASETS

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=str(ROOT / "models" / "default"))
    bundle = load_bundle(parser.parse_args().bundle)
    listed = (Path(bundle.path) / "test_split.txt").read_text().splitlines()
    photos = [DATASETS / line for line in listed if line and not line.startswith("#")]
    answers = {}
    for runtime in ("onnxruntime", "openvino"):
        detector = OnnxDetector(bundle, runtime=runtime)
        answers[runtime] = list(predict_files(detector, photos, Settings()))
    ort, ov = answers["onnxruntime"], answers["openvino"]
    gap = np.abs(
        np.array([a["probability"] for a in ort]) - np.array([b["probability"] for b in ov])
    )
    labels = sum(a["label"] != b["label"] for a, b in zip(ort, ov, strict=True))
    bands = sum(a["band"] != b["band"] for a, b in zip(ort, ov, strict=True))
    print(f"CPU with VNNI: {cpu_has_vnni()}; {len(photos)} photos of the test split")
    print("| probability gap, median | 99th percentile | largest | label changed | band changed |")
    print("|---|---|---|---|---|")
    print(
        f"| {np.median(gap):.4f} | {np.percentile(gap, 99):.4f} | {gap.max():.4f} | "
        f"{labels} ({labels / len(photos):.1%}) | {bands} ({bands / len(photos):.1%}) |"
    )


if __name__ == "__main__":
    main()
