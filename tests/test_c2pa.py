"""C2PA Content Credentials on real signed files: read, verified against a trust anchor, and
decisive only when valid, trusted and declaring generative AI."""

from __future__ import annotations

import datetime as dt
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi.testclient import TestClient

from ai_photo_detector.evidence.c2pa import C2paOptions, c2pa_options, find_manifest, read_c2pa
from ai_photo_detector.evidence.provenance import Provenance
from ai_photo_detector.imaging import DecodeLimits, PreprocessSpec, decode_image
from ai_photo_detector.model.inference import PROVENANCE, Verdict, with_provenance
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from helpers import encode, smooth_image

AI, CAMERA = "trainedAlgorithmicMedia", "digitalCapture"


@dataclass(frozen=True)
class Credentials:
    root_pem: str  # the test root CA: the trust anchor
    chain_pem: str  # leaf, then root
    key_pem: str


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "APD Test Org"),
        ]
    )


def _usage(*, sign: bool, certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=certs,
        crl_sign=certs,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.fixture(scope="module")
def credentials() -> Credentials:
    """A root CA and a leaf it signed, in C2PA's certificate profile: the leaf is no CA, its
    key usage is digitalSignature (critical) and its extended key usage one C2PA accepts
    (emailProtection); C2PA refuses self-signed leaves."""
    now = dt.datetime.now(dt.UTC)
    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = (
        x509.CertificateBuilder()
        .subject_name(_name("APD Test Root CA"))
        .issuer_name(_name("APD Test Root CA"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(sign=False, certs=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("APD Test Signer"))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

    key = leaf_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return Credentials(pem(root), pem(leaf) + pem(root), key)


def _sign(data: bytes, source_type: str, creds: Credentials, mime: str = "image/jpeg") -> bytes:
    manifest = {
        "claim_generator_info": [{"name": "APD test generator", "version": "1.0"}],
        "title": "product.jpg",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/"
                            f"digitalsourcetype/{source_type}",
                        }
                    ]
                },
            }
        ],
    }
    chain, key = creds.chain_pem.encode(), creds.key_pem.encode()
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None)
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    with context, c2pa.Builder(manifest, context) as builder:
        out = io.BytesIO()
        builder.sign(c2pa.Signer.from_info(info), mime, io.BytesIO(data), out)
        return out.getvalue()


def _photo(fmt: str = "JPEG") -> bytes:
    # Smooth gradients: the test model's "real" class, so a forced 'ai' is visible.
    return encode(smooth_image(np.random.default_rng(11), 96), fmt, quality=95)


@dataclass(frozen=True)
class Files:
    plain: bytes
    ai: bytes
    camera: bytes
    pixels_changed: bytes  # the AI file, one scan byte changed after signing
    signature_broken: bytes  # the AI file, one byte of its signature changed


def _flip_scan_byte(data: bytes) -> bytes:
    index = (data.find(b"\xff\xda") + len(data)) // 2
    while data[index] >= 0xFE or data[index - 1] == 0xFF:  # no marker made or broken
        index += 1
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _flip_signature_byte(data: bytes) -> bytes:
    # The signature superbox: its label, after the description box's header (25 bytes) and
    # its own (8). COSE puts the signature bytes last.
    start = data.rfind(b"c2pa.signature") - 33
    assert data[start + 4 : start + 8] == b"jumb"
    index = start + int.from_bytes(data[start : start + 4], "big") - 10
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.fixture(scope="module")
def files(credentials: Credentials) -> Files:
    plain = _photo()
    ai = _sign(plain, AI, credentials)
    return Files(
        plain=plain,
        ai=ai,
        camera=_sign(plain, CAMERA, credentials),
        pixels_changed=_flip_scan_byte(ai),
        signature_broken=_flip_signature_byte(ai),
    )


def _anchored(credentials: Credentials) -> C2paOptions:
    return C2paOptions(trust_anchors=credentials.root_pem)


def test_a_trusted_ai_declaration_is_read_and_decisive(
    files: Files, credentials: Credentials
) -> None:
    found = read_c2pa(files.ai, _anchored(credentials))
    assert found is not None
    assert found.as_dict() == {
        "present": True,
        "validation": "valid",
        "trusted": True,
        "tampered": False,
        "failures": [],
        "claim_generator": "APD test generator 1.0",
        "signer": "APD Test Signer",
        "issuer": "APD Test Org",
        "digital_source_type": AI,
        "ai_declared": True,
        "decisive": True,
        "error": None,
    }
    camera = read_c2pa(files.camera, _anchored(credentials))
    assert camera is not None and camera.validation == "valid" and camera.trusted
    assert camera.digital_source_type == CAMERA and not camera.ai_declared
    assert not camera.decisive
    policy_off = C2paOptions(trust_anchors=credentials.root_pem, trusted_ai_decides=False)
    off = read_c2pa(files.ai, policy_off)
    assert off is not None and off.trusted and off.ai_declared and not off.decisive


def test_without_anchors_a_valid_signature_is_untrusted(files: Files) -> None:
    found = read_c2pa(files.ai, C2paOptions())
    assert found is not None
    assert found.validation == "valid" and not found.tampered
    assert not found.trusted and found.failures == ["signingCredential.untrusted"]
    assert found.ai_declared and not found.decisive


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("pixels_changed", "assertion.dataHash.mismatch"),
        ("signature_broken", "claimSignature.mismatch"),
    ],
)
def test_tampering_is_reported_and_never_decisive(
    files: Files, credentials: Credentials, name: str, code: str
) -> None:
    found = read_c2pa(getattr(files, name), _anchored(credentials))
    assert found is not None
    assert found.validation == "invalid" and found.tampered and code in found.failures
    assert found.ai_declared and not found.trusted and not found.decisive


def test_other_containers_and_files_without_a_manifest(credentials: Credentials) -> None:
    for fmt, mime in (("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")):
        signed = _sign(_photo(fmt), CAMERA, credentials, mime)
        marker = find_manifest(signed)
        assert marker is not None and marker.mime == mime
        found = read_c2pa(signed, _anchored(credentials))
        assert found is not None and found.trusted, fmt
        assert found.digital_source_type == CAMERA
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP"):
        assert read_c2pa(_photo(fmt), C2paOptions()) is None, fmt


def _app11(payload: bytes) -> bytes:
    return b"\xff\xeb" + (len(payload) + 2).to_bytes(2, "big") + payload


def _first_app11(data: bytes) -> tuple[int, int]:
    start = data.find(b"\xff\xeb")
    return start, start + 2 + int.from_bytes(data[start + 2 : start + 4], "big")


def test_hostile_manifests_cost_little_and_break_nothing(files: Files) -> None:
    start, end = _first_app11(files.ai)
    payload = files.ai[start + 4 : end]
    head = b"JP\x02\x11\x00\x00\x00\x01"  # JPEG XT: box instance, sequence number
    description = payload[16:48]  # the store's description box: its UUID spells "c2pa"
    cases = {
        "truncated": files.ai[:start] + _app11(payload[: len(payload) // 2]) + files.ai[end:],
        "garbage": files.ai[:start]
        + _app11(payload[:60] + bytes(range(256)) * ((len(payload) - 60) // 256))
        + files.ai[end:],
        "huge claim": files.plain[:2]
        + _app11(head + (0xFFFFFF00).to_bytes(4, "big") + b"jumb" + description)
        + files.plain[2:],
        "huge extended claim": files.plain[:2]
        + _app11(head + b"\x00\x00\x00\x01jumb" + (1 << 62).to_bytes(8, "big") + description)
        + files.plain[2:],
    }
    started = time.perf_counter()
    for name, data in cases.items():
        found = read_c2pa(data, C2paOptions())
        assert found is not None, name
        assert found.error and not found.present and not found.decisive, name
    assert time.perf_counter() - started < 1.0
    assert "truncated" in (read_c2pa(cases["truncated"], C2paOptions()).error or "")
    assert "over the" in (read_c2pa(cases["huge claim"], C2paOptions()).error or "")
    too_big = read_c2pa(files.ai, C2paOptions(max_file_bytes=1000))
    assert too_big is not None and "not verified" in (too_big.error or "")
    # Millions of empty segments: the walk stops early instead of looping over them all.
    padded = files.plain[:2] + b"\xff\xfe\x00\x02" * 2_000_000 + files.ai[2:]
    started = time.perf_counter()
    assert read_c2pa(padded, C2paOptions()) is None
    assert time.perf_counter() - started < 0.5


def test_the_library_is_imported_only_for_a_manifest(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "c2pa", None)  # any import of it now fails
    limits = DecodeLimits(c2pa=C2paOptions())
    plain = decode_image(files.plain, PreprocessSpec(), limits).info.provenance
    assert plain is not None and plain.c2pa is None
    signed = decode_image(files.ai, PreprocessSpec(), limits).info.provenance
    assert signed is not None and signed.c2pa is not None
    assert "c2pa" in (signed.c2pa.error or "")  # the import was tried, and failed cleanly
    # Without options (training, dataset scans) C2PA is never looked at.
    untouched = decode_image(files.ai, PreprocessSpec()).info.provenance
    assert untouched is not None and untouched.c2pa is None


def test_only_a_decisive_manifest_changes_a_verdict(files: Files, credentials: Credentials) -> None:
    model = Verdict("real", "uncertain", 0.4, {"ai": 0.4, "real": 0.6}, ("low_margin",))
    trusted = Provenance(c2pa=read_c2pa(files.ai, _anchored(credentials)))
    forced = with_provenance(model, trusted, "ai")
    assert (forced.label, forced.band, forced.reasons) == ("ai", "ai", (PROVENANCE,))
    assert forced.probability == model.probability and forced.scores == model.scores
    assert forced.model_label == "real"  # what the model said stays on record
    for other in (
        Provenance(c2pa=read_c2pa(files.ai, C2paOptions())),
        Provenance(c2pa=read_c2pa(files.pixels_changed, _anchored(credentials))),
        Provenance(c2pa=read_c2pa(files.camera, _anchored(credentials))),
        Provenance(),
        None,
    ):
        assert with_provenance(model, other, "ai") is model


def test_trust_anchor_settings(tmp_path: Path, credentials: Credentials) -> None:
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(credentials.root_pem)
    options = c2pa_options(Settings(provenance={"trust_anchors": anchors}))
    assert options is not None and options.trust_anchors == credentials.root_pem
    assert c2pa_options(Settings(provenance={"c2pa": False})) is None
    with pytest.raises(FileNotFoundError):
        c2pa_options(Settings(provenance={"trust_anchors": tmp_path / "missing.pem"}))
    (tmp_path / "empty.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="no PEM certificate"):
        c2pa_options(Settings(provenance={"trust_anchors": tmp_path / "empty.pem"}))


def test_the_api_follows_the_policy(
    bundle_dir: Path, files: Files, credentials: Credentials, tmp_path: Path
) -> None:
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(credentials.root_pem)
    answers: dict[str, dict[str, dict[str, Any]]] = {}
    for name, provenance in (("anchored", {"trust_anchors": str(anchors)}), ("bare", {})):
        settings = Settings(model=str(bundle_dir), provenance=provenance)
        with TestClient(create_app(settings)) as client:
            answers[name] = {
                kind: client.post("/v1/predict", content=getattr(files, kind)).json()
                for kind in ("plain", "ai", "camera", "pixels_changed")
            }
    model = answers["bare"]["plain"]
    assert model["band"] != "ai", "the test needs a photo the model does not call ai"
    forced = answers["anchored"]["ai"]
    assert (forced["label"], forced["band"], forced["reasons"]) == ("ai", "ai", ["provenance"])
    assert forced["probability"] == pytest.approx(model["probability"], abs=1e-6)
    c2pa_field = forced["evidence"]["provenance"]["c2pa"]
    assert c2pa_field["trusted"] and c2pa_field["decisive"] and c2pa_field["signer"]
    assert answers["anchored"]["plain"]["evidence"]["provenance"]["c2pa"] is None
    # The model's verdict stands for everything else.
    same = ("label", "band", "reasons")
    untrusted = answers["bare"]["ai"]
    assert {k: untrusted[k] for k in same} == {k: model[k] for k in same}
    assert untrusted["evidence"]["provenance"]["c2pa"]["validation"] == "valid"
    assert untrusted["evidence"]["provenance"]["c2pa"]["trusted"] is False
    camera = answers["anchored"]["camera"]
    assert {k: camera[k] for k in same} == {k: model[k] for k in same}
    tampered = answers["anchored"]["pixels_changed"]
    assert "provenance" not in tampered["reasons"]
    assert tampered["evidence"]["provenance"]["c2pa"]["tampered"] is True


def test_predict_json_and_batch_jobs_follow_the_policy(
    bundle_dir: Path, files: Files, credentials: Credentials, tmp_path: Path
) -> None:
    from ai_photo_detector.batch.scoring import score_items
    from ai_photo_detector.cli.file_predictions import predict_files
    from ai_photo_detector.imaging import upload_limits
    from ai_photo_detector.model.bundle import load_bundle
    from ai_photo_detector.model.inference import OnnxDetector
    from ai_photo_detector.persistence.jobs import Item

    anchors = tmp_path / "anchors.pem"
    anchors.write_text(credentials.root_pem)
    settings = Settings(model=str(bundle_dir), provenance={"trust_anchors": anchors})
    detector = OnnxDetector(load_bundle(bundle_dir))
    paths = []
    for kind in ("ai", "plain"):
        paths.append(tmp_path / f"{kind}.jpg")
        paths[-1].write_bytes(getattr(files, kind))
    signed, plain = predict_files(detector, paths, settings)
    assert signed["band"] == "ai" and signed["reasons"] == ["provenance"]
    assert signed["evidence"]["provenance"]["c2pa"]["decisive"] is True
    assert "provenance" not in plain["reasons"]
    items = [Item(number=i, name=str(p)) for i, p in enumerate(paths)]
    rows = score_items(
        detector, items, lambda item: Path(item.name).read_bytes(), upload_limits(settings)
    )
    assert rows[0]["band"] == "ai" and rows[0]["reasons"] == "provenance"
    assert "provenance" not in rows[1]["reasons"]


def test_live_accuracy_judges_the_model_not_the_policy(
    bundle_dir: Path, files: Files, credentials: Credentials, tmp_path: Path
) -> None:
    """The log keeps both labels; reviewers' verdicts are compared with the model's own."""
    from sqlalchemy import select

    from ai_photo_detector.persistence.feedback import live_accuracy, record_feedback
    from ai_photo_detector.persistence.schema import Prediction
    from ai_photo_detector.persistence.store import Store

    anchors = tmp_path / "anchors.pem"
    anchors.write_text(credentials.root_pem)
    database = f"sqlite:///{tmp_path / 'log.db'}"
    settings = Settings(
        model=str(bundle_dir), provenance={"trust_anchors": anchors}, database_url=database
    )
    started = dt.datetime.now(dt.UTC)
    with TestClient(create_app(settings)) as client:
        forced = client.post("/v1/predict", content=files.ai).json()
        plain = client.post("/v1/predict", content=files.plain).json()
        client.app.state.services.prediction_log.flush(10)  # type: ignore[attr-defined]
    assert forced["reasons"] == ["provenance"] and plain["label"] != "ai"
    store = Store(database)
    with store.session() as session:
        row = session.scalars(select(Prediction).where(Prediction.id == forced["prediction_id"]))
        logged = row.one()
        assert (logged.label, logged.model_label) == ("ai", plain["label"])
    # The reviewer agrees with the model on the very same pixels: the model was right.
    result = record_feedback(store, forced["prediction_id"], plain["label"], "test")
    assert result.predicted_label == plain["label"]
    (accuracy,) = live_accuracy(store, started, "ai")
    assert (accuracy.count, accuracy.accuracy) == (1, 1.0)
