"""C2PA Content Credentials: a signed manifest embedded in the file, read and verified.

Unlike the plain metadata of :mod:`ai_photo_detector.evidence.provenance`, a C2PA manifest is signed
and bound to the file's bytes by a hash: a valid one whose signer chains to a trust anchor the
operator configured is evidence worth acting on (see ``inference.with_provenance``); one that
fails validation says the file or its manifest changed after signing (``tampered``).

Cost and safety: a cheap walk of the container's structure (JPEG APP11 segments, PNG ``caBX``,
WebP ``C2PA`` chunks, the GIF ``C2PA_GIF`` extension) decides whether there is a manifest at
all; only then is the ``c2pa`` library imported and given the bytes, and only when the file and
the manifest it claims are under the configured caps. The library never touches the network
here (no remote manifests, no OCSP, no allowed hosts). Every failure becomes ``error``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ai_photo_detector.settings import Settings

# IPTC NewsCodes digital source types that declare generative AI.
AI_SOURCE_TYPES = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
TEXT_CHARS = 200
MAX_FAILURES = 20
# A real JPEG has tens of segments before its pixels; past this the walk stops (a file of
# millions of empty segments must not cost a Python loop per segment).
_MAX_SEGMENTS = 4096
_MAX_CHUNKS = 65_536
_WALK_DEPTH, _WALK_NODES = 8, 5000
_GIF_MARKER = b"\x21\xff\x0bC2PA_GIF"


@dataclass(frozen=True)
class C2paOptions:
    """How C2PA manifests are read: caps, trust anchors and whether a trusted AI declaration
    decides the verdict."""

    max_file_bytes: int = 32 * 1024 * 1024
    max_manifest_bytes: int = 4 * 1024 * 1024
    trust_anchors: str | None = None  # PEM text of the root certificates trusted
    trusted_ai_decides: bool = True


@dataclass
class C2paEvidence:
    """What the file's Content Credentials say, and whether they hold."""

    present: bool = False  # a manifest store was read
    validation: str | None = None  # "valid" or "invalid"; None when it could not be verified
    trusted: bool = False  # the signer chains to a configured trust anchor
    tampered: bool = False  # validation failed: the file or its manifest changed after signing
    failures: list[str] = field(default_factory=list)  # C2PA status codes of what failed
    claim_generator: str | None = None  # the software that made the manifest
    signer: str | None = None  # signing certificate's common name
    issuer: str | None = None  # and its organisation, as the manifest reports it
    digital_source_type: str | None = None  # IPTC code declared in the active manifest
    ai_declared: bool = False  # the active manifest declares generative AI
    decisive: bool = False  # valid, trusted, AI declared and the policy on: it set the verdict
    error: str | None = None  # why the manifest could not be read or verified

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Marker:
    """An embedded manifest store: the container's MIME type, the size its first JUMBF box
    claims (None where the container does not say) and the bytes the container carries."""

    mime: str
    claimed: int | None = None
    carried: int | None = None


def load_trust_anchors(path: Path | None) -> str | None:
    """The PEM text of a trust anchor file; a missing or certificate-less file is an error
    (a silently empty trust list would quietly turn the policy off)."""
    if path is None:
        return None
    text = path.read_text(encoding="ascii")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{path}: no PEM certificate in the trust anchor file")
    return text


def _box_size(box: bytes) -> int | None:
    """Size a JUMBF box header claims (LBox, or XLBox when LBox is 1)."""
    if len(box) < 8 or box[4:8] != b"jumb":
        return None
    size = int.from_bytes(box[:4], "big")
    if size == 1 and len(box) >= 16:
        size = int.from_bytes(box[8:16], "big")
    return size


def _jpeg(data: bytes) -> Marker | None:
    pos = 2
    first: dict[bytes, bytes] = {}  # box instance -> its first segment's box bytes
    carried: dict[bytes, int] = {}
    for _ in range(_MAX_SEGMENTS):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata past here
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        # APP11 carries JUMBF as JPEG XT: "JP", box instance (2), sequence (4), then the box.
        # Only a segment's head is sliced: its payload is never copied.
        head = data[pos + 4 : pos + 4 + min(56, max(length - 2, 0))]
        if marker == 0xEB and head[:2] == b"JP" and head[12:16] == b"jumb":
            instance = head[2:4]
            first.setdefault(instance, head[8:])
            size = min(length - 2, len(data) - pos - 4)  # what the file really holds
            carried[instance] = carried.get(instance, 0) + size - 8
        pos += 2 + length
    for instance, box in first.items():
        # The manifest store's description box comes first, its UUID starting "c2pa".
        if b"c2pa" in box[:48]:
            return Marker("image/jpeg", _box_size(box), carried[instance])
    return None


def _png(data: bytes) -> Marker | None:
    pos = 8
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"caBX":
            carried = min(length, len(data) - pos - 8)
            return Marker("image/png", _box_size(data[pos + 8 : pos + 24]), carried)
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def _webp(data: bytes) -> Marker | None:
    pos = 12
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            break
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"C2PA":
            carried = min(length, len(data) - pos - 8)
            return Marker("image/webp", _box_size(data[pos + 8 : pos + 24]), carried)
        pos += 8 + length + (length & 1)
    return None


def find_manifest(data: bytes) -> Marker | None:
    """Where the file embeds a C2PA manifest store, found without parsing it; None when it
    carries none (or is a format read here without C2PA: BMP, TIFF)."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:4] == b"GIF8" and _GIF_MARKER in data:
        return Marker("image/gif")
    return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.replace("\x00", "").strip()[:TEXT_CHARS] or None


def _source_types(node: Any) -> list[str]:
    """Every ``digitalSourceType`` value in an assertion's data (IPTC codes, from their URL),
    walked breadth-first within a bounded number of nodes."""
    found: list[str] = []
    queue: list[tuple[Any, int]] = [(node, 0)]
    for seen, (item, depth) in enumerate(queue):
        if seen >= _WALK_NODES:
            break
        children: list[Any]
        if isinstance(item, dict):
            for key, value in item.items():
                if str(key).lower().endswith("digitalsourcetype") and isinstance(value, str):
                    found.append(value.rstrip("/").rsplit("/", 1)[-1][:64])
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth < _WALK_DEPTH:
            queue.extend((child, depth + 1) for child in children)
    return found


def _generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        name, version = _text(infos[0].get("name")), _text(infos[0].get("version"))
        if name:
            return f"{name} {version}" if version else name
    return _text(manifest.get("claim_generator"))


def _evidence(store: dict[str, Any], options: C2paOptions) -> C2paEvidence:
    found = C2paEvidence(present=True)
    state = store.get("validation_state")
    statuses = store.get("validation_status") or []
    codes = [s.get("code") for s in statuses if isinstance(s, dict)]
    found.failures = list(dict.fromkeys(c[:100] for c in codes if isinstance(c, str)))[
        :MAX_FAILURES
    ]
    found.validation = {"Trusted": "valid", "Valid": "valid", "Invalid": "invalid"}.get(str(state))
    found.tampered = found.validation == "invalid"
    # Only the operator's anchors count, never ones the library might bring along.
    found.trusted = state == "Trusted" and options.trust_anchors is not None
    manifests = store.get("manifests")
    active = manifests.get(store.get("active_manifest")) if isinstance(manifests, dict) else None
    if not isinstance(active, dict):
        return found
    found.claim_generator = _generator(active)
    signature = active.get("signature_info")
    if isinstance(signature, dict):
        found.signer = _text(signature.get("common_name"))
        found.issuer = _text(signature.get("issuer"))
    assertions = active.get("assertions")
    types = _source_types(assertions if isinstance(assertions, list) else [])
    declared = [t for t in types if t in AI_SOURCE_TYPES]
    found.digital_source_type = next(iter(declared or types), None)
    found.ai_declared = bool(declared)
    found.decisive = (
        options.trusted_ai_decides
        and found.validation == "valid"
        and found.trusted
        and found.ai_declared
    )
    return found


def _verify(data: bytes, mime: str, options: C2paOptions) -> dict[str, Any]:
    import c2pa  # type: ignore[import-untyped]  # here only: most images never need it

    config: dict[str, Any] = {
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "core": {"allowed_network_hosts": []},
    }
    if options.trust_anchors is not None:
        config["trust"] = {"trust_anchors": options.trust_anchors}
    with (
        c2pa.Context.from_dict(config) as context,
        c2pa.Reader(mime, io.BytesIO(data), context=context) as reader,
    ):
        store: dict[str, Any] = json.loads(reader.json())
    return store


def read_c2pa(data: bytes, options: C2paOptions) -> C2paEvidence | None:
    """The file's Content Credentials, or None when it embeds no manifest. Never raises:
    what cannot be read or verified is said in ``error``."""
    marker = find_manifest(data)
    if marker is None:
        return None
    if len(data) > options.max_file_bytes:
        return C2paEvidence(error=f"file over {options.max_file_bytes} bytes: not verified")
    if marker.claimed is not None:
        if marker.claimed > options.max_manifest_bytes:
            return C2paEvidence(
                error=f"manifest claims {marker.claimed} bytes, over the "
                f"{options.max_manifest_bytes}-byte limit: not verified"
            )
        if marker.carried is not None and marker.claimed > marker.carried:
            return C2paEvidence(
                error=f"manifest truncated: claims {marker.claimed} bytes, the file carries "
                f"{marker.carried}"
            )
    try:
        return _evidence(_verify(data, marker.mime, options), options)
    except Exception as exc:  # the library's parse errors, and anything else: never fatal
        return C2paEvidence(error=(str(exc) or type(exc).__name__)[:TEXT_CHARS])


def c2pa_options(settings: Settings) -> C2paOptions | None:
    """How Content Credentials are read when scoring (None: not at all); reads the trust
    anchor file, so a wrong path fails here, at start-up."""
    provenance = settings.provenance
    if not provenance.c2pa:
        return None
    return C2paOptions(
        max_file_bytes=provenance.c2pa_max_file_bytes,
        max_manifest_bytes=provenance.c2pa_max_manifest_bytes,
        trust_anchors=load_trust_anchors(provenance.trust_anchors),
        trusted_ai_decides=provenance.trusted_ai_decides,
    )
