"""Real photographs no training set here contains, scored by one or more bundles.

scikit-image, scikit-learn and matplotlib ship a few genuine photographs with their packages
(an astronaut, a cat, coffee, a rocket, a camera man, coins, the moon, brick, grass, gravel, a
stereo motorcycle, a Chinese temple, a flower, Grace Hopper): a small, offline check that real
photos of unseen sources stay out of the 'ai' band. Fourteen images decide nothing alone; the
model card quotes them beside the leave-one-source-out table.

Run: python -m research.offline_photos models/default [models/fast ...]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from skimage import data
from sklearn.datasets import load_sample_images

from ai_photo_detector.cli.file_predictions import predict_files
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.settings import Settings

SKIMAGE = ["astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "brick"]
SKIMAGE += ["grass", "gravel"]


def write_photos(folder: Path) -> list[Path]:
    """The packaged photographs as PNG (grey ones as RGB), plus matplotlib's JPEG as it is."""
    arrays = {name: getattr(data, name)() for name in SKIMAGE}
    arrays["motorcycle"] = data.stereo_motorcycle()[0]
    for index, image in enumerate(load_sample_images().images):
        arrays[f"sklearn_{index}"] = image
    paths = []
    for name, array in arrays.items():
        rgb = np.stack([array] * 3, axis=-1) if array.ndim == 2 else array[..., :3]
        path = folder / f"{name}.png"
        Image.fromarray(rgb.astype(np.uint8)).save(path)
        paths.append(path)
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    paths.append(Path(shutil.copy(hopper, folder / hopper.name)))
    return sorted(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = write_photos(Path(tmp))
        for bundle in args.bundles:
            detector = OnnxDetector(load_bundle(bundle))
            results = list(predict_files(detector, photos, Settings()))
            print(f"## {bundle}")
            for path, result in zip(photos, results, strict=True):
                if "error" in result:
                    print(f"{path.stem:<14} error: {result['error']}")
                    continue
                reasons = ", ".join(result["reasons"])
                print(
                    f"{path.stem:<14} {result['band']:<9} p(ai) {result['probability']:.3f} "
                    f"label {result['label']:<5} {reasons}"
                )
            bands = Counter(result.get("band", "error") for result in results)
            print(f"bands: {dict(sorted(bands.items()))} of {len(results)}\n")


if __name__ == "__main__":
    main()
