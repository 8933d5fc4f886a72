"""Provenance evidence from metadata: what generators and cameras write, read safely, shown
beside the verdict and never changing it (signed C2PA manifests: test_c2pa.py)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ai_photo_detector.evidence.provenance import read_provenance
from ai_photo_detector.imaging import PreprocessSpec, decode_image
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from helpers import smooth_image

XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-'
    'syntax-ns#"><rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    ' Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/{kind}"/>'
    "</rdf:RDF></x:xmpmeta>"
)


def _picture() -> Image.Image:
    return smooth_image(np.random.default_rng(3), 96)


def _png(**text: str) -> bytes:
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    buffer = io.BytesIO()
    _picture().save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _jpeg(**exif_tags: str) -> bytes:
    image = _picture()
    exif = Image.Exif()
    codes = {"Software": 0x0131, "Make": 0x010F, "Model": 0x0110}
    for name, value in exif_tags.items():
        exif[codes[name]] = value
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def _read(data: bytes) -> dict[str, object]:
    info = decode_image(data, PreprocessSpec()).info
    assert info.provenance is not None
    return info.provenance.as_dict()


def test_generators_that_name_themselves_are_recognised() -> None:
    a1111 = _read(_png(parameters="a shoe on a table\nSteps: 20, Sampler: Euler a"))
    assert a1111["generator"] == "Stable Diffusion" and a1111["ai_declared"] is True
    assert a1111["text_chunks"] == ["parameters"]
    comfy = _read(_png(prompt='{"3": {"class_type": "KSampler"}}', workflow="{}"))
    assert comfy["generator"] == "ComfyUI" and comfy["text_chunks"] == ["prompt", "workflow"]
    midjourney = _read(_jpeg(Software="Midjourney v6"))
    assert midjourney["generator"] == "Midjourney" and midjourney["software"] == "Midjourney v6"


def test_a_camera_photo_says_so_and_claims_nothing() -> None:
    camera = _read(_jpeg(Make="Canon", Model="EOS R5", Software="Adobe Lightroom 7.1"))
    assert camera == {
        "digital_source_type": None,
        "ai_declared": False,
        "generator": None,
        "software": "Adobe Lightroom 7.1",
        "camera": "Canon EOS R5",
        "text_chunks": [],
        "c2pa": None,
    }
    plain = _read(_jpeg())
    assert plain["ai_declared"] is False and plain["generator"] is None


@pytest.mark.parametrize(
    ("kind", "declared"),
    [
        ("trainedAlgorithmicMedia", True),
        ("compositeWithTrainedAlgorithmicMedia", True),
        ("digitalCapture", False),
    ],
)
def test_iptc_digital_source_type_in_xmp(kind: str, declared: bool) -> None:
    found = _read(_png(**{"XML:com.adobe.xmp": XMP.format(kind=kind)}))
    assert found["digital_source_type"] == kind and found["ai_declared"] is declared
    element = XMP.format(kind=kind).replace(
        f' Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/{kind}"/>',
        f"><Iptc4xmpExt:DigitalSourceType>{kind}</Iptc4xmpExt:DigitalSourceType></rdf:Description>",
    )
    assert _read(_png(**{"XML:com.adobe.xmp": element}))["digital_source_type"] == kind


def test_hostile_metadata_costs_little_and_breaks_nothing() -> None:
    # An entity bomb is text to a regular expression, and only 64 KiB of XMP are searched.
    bomb = '<!DOCTYPE x [<!ENTITY a "' + "A" * 1000 + '">]>' + "&a;" * 200_000
    huge = _png(**{"XML:com.adobe.xmp": bomb + XMP.format(kind="trainedAlgorithmicMedia")})
    started = time.perf_counter()
    found = _read(huge)
    assert time.perf_counter() - started < 2.0
    assert found["digital_source_type"] is None  # past the scanned prefix: not seen
    long_chunk = _read(_png(parameters="x" * 2_000_000))
    assert long_chunk["generator"] == "Stable Diffusion"  # the value itself is never returned
    # A broken EXIF block (an IFD claiming 65535 entries) is no evidence, and no error.
    broken = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
    segment = b"\xff\xe1" + (len(broken) + 2).to_bytes(2, "big") + broken
    jpeg = _jpeg()
    found = read_provenance(Image.open(io.BytesIO(jpeg[:2] + segment + jpeg[2:])))
    assert found.generator is None and found.camera is None


def test_the_api_shows_provenance_and_the_verdict_ignores_it(bundle_dir: Path) -> None:
    declared = _png(
        parameters="Steps: 20", **{"XML:com.adobe.xmp": XMP.format(kind="trainedAlgorithmicMedia")}
    )
    bare = _png()
    with TestClient(create_app(Settings(model=str(bundle_dir)))) as client:
        shown = client.post("/v1/predict", content=declared).json()
        plain = client.post("/v1/predict", content=bare).json()
    provenance = shown["evidence"]["provenance"]
    assert provenance["ai_declared"] is True and provenance["generator"] == "Stable Diffusion"
    assert provenance["digital_source_type"] == "trainedAlgorithmicMedia"
    assert plain["evidence"]["provenance"]["ai_declared"] is False
    assert provenance["c2pa"] is None  # no Content Credentials: nothing to verify
    # Same pixels, same verdict: unsigned metadata is shown, never acted on.
    assert shown["probability"] == pytest.approx(plain["probability"], abs=1e-6)
    assert shown["band"] == plain["band"]


def test_predict_json_carries_the_evidence(bundle_dir: Path, tmp_path: Path) -> None:
    from ai_photo_detector.cli.file_predictions import predict_files
    from ai_photo_detector.model.bundle import load_bundle
    from ai_photo_detector.model.inference import OnnxDetector

    photo = tmp_path / "render.png"
    photo.write_bytes(_png(workflow="{}"))
    detector = OnnxDetector(load_bundle(bundle_dir))
    (result,) = predict_files(detector, [photo], Settings(model=str(bundle_dir)))
    assert result["evidence"]["provenance"]["generator"] == "ComfyUI"
