from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")

from PIL import Image  # noqa: E402

from ai_photo_detector.imaging import PreprocessSpec, preprocess_bytes  # noqa: E402
from ai_photo_detector.training.timm_weights import (  # noqa: E402
    WeightsError,
    create_backbone,
    load_positional,
)

CAT_CLASSES = set(range(281, 286))  # ImageNet tabby, tiger, Persian, Siamese, Egyptian cat


def test_offline_imagenet_weights_really_load() -> None:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="PNG")
    array, _ = preprocess_bytes(buffer.getvalue(), PreprocessSpec(input_size=224))
    model = create_backbone("tf_efficientnet_lite0", pretrained=True).eval()
    with torch.no_grad():
        probs = model(torch.from_numpy(array)[None]).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in CAT_CLASSES
    assert float(probs[sorted(CAT_CLASSES)].sum()) > 0.5


def test_shape_mismatch_is_refused() -> None:
    model = create_backbone("tf_efficientnet_lite0", pretrained=False)
    state = {f"k{i}": torch.zeros(1) for i in range(len(model.state_dict()))}
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_positional(model, state)


def test_backbone_without_packaged_weights_says_what_to_do() -> None:
    with pytest.raises(WeightsError, match="weights_path"):
        create_backbone("resnet18", pretrained=True)
    assert np.isfinite(sum(p.sum().item() for p in create_backbone("resnet18", False).parameters()))
