"""What provenance evidence costs per image, against the whole decode + predict of that image.

Photos with and without a C2PA manifest (the same JPEGs, signed here with a throw-away CA,
thumbnail included as real signers do; read with that CA as trust anchor), at 1024x1024 and
2048x1536. Provenance extraction = ``read_provenance`` on a freshly opened image (XMP, EXIF,
PNG text, and C2PA where a manifest is found), measured as (open + provenance) - (open alone),
since the service opens the image anyway. Decode + predict = the service's lone-image path with
the shipped model: decode (provenance included), model view, normalise, one ONNX run, verdict.
Best of 5 alternating rounds per contender (``common.best_rates``). No target: the ratio says
what the evidence adds to a request.
Run: .venv/bin/python -m benchmarks.provenance_cost
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from ai_photo_detector.evidence.c2pa import C2paOptions, find_manifest, read_c2pa
from ai_photo_detector.evidence.provenance import read_provenance
from ai_photo_detector.imaging import DecodeLimits, decode_image, to_model_input
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.settings import Settings
from benchmarks.common import best_rates, print_table, write_csv
from benchmarks.photos import sample_photo

SIZES = ((1024, 1024), (2048, 1536))
PHOTOS = 4


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer_key: ec.EllipticCurvePrivateKey,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    usage = x509.KeyUsage(not ca, False, False, False, False, ca, ca, False, False)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer if not ca else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if not ca:  # C2PA's leaf profile: a document-signing purpose, its issuer named
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    return builder.sign(signer_key, hashes.SHA256())


def signer() -> tuple[Callable[[bytes], bytes], str]:
    """A signing function (JPEG in, signed JPEG out) and the PEM of its root CA."""
    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = _certificate("Bench Root CA", root_key, x509.Name([]), root_key, ca=True)
    leaf = _certificate("Bench Signer", leaf_key, root.subject, root_key, ca=False)
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    key = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    manifest = {
        "claim_generator_info": [{"name": "provenance_cost", "version": "1"}],
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": "http://cv.iptc.org/newscodes/"
                            "digitalsourcetype/trainedAlgorithmicMedia",
                        }
                    ]
                },
            }
        ],
    }

    def sign(data: bytes) -> bytes:
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, key, None)
        with c2pa.Builder(manifest) as builder:
            out = io.BytesIO()
            builder.sign(c2pa.Signer.from_info(info), "image/jpeg", io.BytesIO(data), out)
            return out.getvalue()

    return sign, root.public_bytes(serialization.Encoding.PEM).decode("ascii")


def main() -> None:
    sign, anchors = signer()
    options = C2paOptions(trust_anchors=anchors)
    limits = DecodeLimits(c2pa=options)
    detector = OnnxDetector(load_bundle(Settings().model), lanes=False)
    spec = detector.manifest.preprocessing

    def each(photos: list[bytes], fn: Callable[[bytes], object]) -> Callable[[], None]:
        def run() -> None:
            for data in photos:
                fn(data)

        return run

    def predict(data: bytes) -> object:
        decoded = decode_image(data, spec, limits)
        output = detector.run(to_model_input(decoded.image, spec)[None])
        return detector.verdicts(output, [decoded.info.provenance])

    def provenance(data: bytes) -> object:
        return read_provenance(Image.open(io.BytesIO(data)), data, options)

    rows = []
    for width, height in SIZES:
        plain = [sample_photo(width, height, i) for i in range(PHOTOS)]
        signed = [sign(data) for data in plain]
        found = read_c2pa(signed[0], options)
        assert found is not None and found.decisive, found
        contenders = {}
        for kind, photos in (("plain", plain), ("signed", signed)):
            contenders[f"{kind} open"] = each(photos, lambda d: Image.open(io.BytesIO(d)))
            contenders[f"{kind} open+provenance"] = each(photos, provenance)
            contenders[f"{kind} decode+predict"] = each(photos, predict)
        contenders["plain marker scan"] = each(plain, find_manifest)
        contenders["signed c2pa read"] = each(signed, lambda d: read_c2pa(d, options))
        rates = best_rates(contenders, PHOTOS, rounds=5, min_time=0.5)
        for kind, photos in (("plain", plain), ("signed", signed)):
            whole_ms = 1000 / rates[f"{kind} decode+predict"]
            open_ms = 1000 / rates[f"{kind} open"]
            provenance_ms = 1000 / rates[f"{kind} open+provenance"] - open_ms
            c2pa_ms = 1000 / rates["signed c2pa read" if kind == "signed" else "plain marker scan"]
            rows.append(
                {
                    "image": f"{width}x{height} JPEG q90",
                    "manifest": kind == "signed",
                    "file_kb": round(sum(map(len, photos)) / len(photos) / 1024),
                    "decode_predict_ms": whole_ms,
                    "provenance_ms": provenance_ms,
                    "c2pa_part_ms": c2pa_ms,
                    "provenance_ratio": provenance_ms / whole_ms,
                }
            )
    print_table(rows)
    print("written", write_csv("provenance_cost", rows))


if __name__ == "__main__":
    main()
