"""The one typed settings tree.

Every tunable number lives here once. Values come from, in order of precedence: keyword
arguments, environment variables (prefix ``APD_``, nested fields joined by ``__``, e.g.
``APD_TRAINING__EPOCHS=3``), an optional YAML file (``APD_CONFIG`` or ``--config``), defaults.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PACKAGE_DIR = Path(__file__).resolve().parent


def default_model_path() -> str:
    """The shipped bundle: ``models/default`` of the source checkout, else of the working dir."""
    for root in (PACKAGE_DIR.parents[1], Path.cwd()):
        candidate = root / "models" / "default"
        if (candidate / "manifest.json").is_file():
            return str(candidate)
    return str(Path("models") / "default")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagingSettings(Section):
    input_size: int | None = Field(
        None,
        ge=16,
        le=1024,
        description="Square model input side in pixels for training (None: the backbone's own: "
        "160 for clip_vit_b16, 224 for tf_efficientnet_lite0). Serving reads it from the bundle.",
    )
    canonical_jpeg_quality: int | None = Field(
        90,
        ge=1,
        le=100,
        description="Training re-encodes every model view as JPEG at this quality, and the "
        "bundle makes serving do the same, so format, size and original compression carry no "
        "label (None: off).",
    )
    max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest declared width*height accepted before decoding (decompression bombs).",
    )
    min_side: int = Field(16, ge=1, description="Smallest width or height accepted for inference.")
    max_side: int = Field(20_000, ge=1, description="Largest width or height accepted.")


class ProvenanceSettings(Section):
    c2pa: bool = Field(
        True, description="Read and verify C2PA Content Credentials where a file embeds them."
    )
    trust_anchors: Path | None = Field(
        None,
        description="PEM file of the root certificates a C2PA signer must chain to for its "
        "manifest to be trusted (None: none is; valid signatures are reported valid but "
        "untrusted). A missing or certificate-less file stops start-up.",
    )
    trusted_ai_decides: bool = Field(
        True,
        description="A valid C2PA manifest from a trusted signer that declares generative AI "
        "makes the verdict ai, with reason 'provenance', whatever the model says.",
    )
    c2pa_max_file_bytes: int = Field(
        32 * 1024 * 1024, ge=1, description="Larger files are not C2PA-verified (the error says)."
    )
    c2pa_max_manifest_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1,
        description="A manifest claiming more bytes is not read (the error says).",
    )


class DataSettings(Section):
    ai_label: str = Field("ai", description="Label name that means 'AI-generated'.")
    real_label: str = Field("real", description="Label name of camera photos, for FPR targets.")
    extensions: list[str] = Field(
        [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"],
        description="File suffixes treated as images when scanning folders.",
    )
    tiny_side: int = Field(64, ge=1, description="Images with a side below this are reported tiny.")
    near_duplicate_distance: int = Field(
        6, ge=0, le=64, description="Max perceptual-hash Hamming distance of a near-duplicate."
    )
    imbalance_ratio: float = Field(
        1.5, ge=1.0, description="Largest/smallest label count ratio above which balance warns."
    )
    shortcut_warn_auc: float = Field(
        0.75, ge=0.5, le=1.0, description="Metadata-only ROC-AUC above which the audit warns."
    )
    shortcut_alarm_auc: float = Field(
        0.95, ge=0.5, le=1.0, description="Metadata-only ROC-AUC above which the audit alarms."
    )
    processed_max_auc: float = Field(
        0.6,
        ge=0.5,
        le=1.0,
        description="Metadata-only ROC-AUC allowed on the processed model views, per source.",
    )
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of each stratum for val.")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="Share of each stratum for test.")
    split_seed: int = Field(20261127, description="Seed of the deterministic split.")


class AugmentSettings(Section):
    jpeg_probability: float = Field(
        0.9, ge=0, le=1, description="Chance of re-encoding a training image as JPEG."
    )
    jpeg_quality_min: int = Field(40, ge=1, le=100, description="Lowest re-encode quality.")
    jpeg_quality_max: int = Field(100, ge=1, le=100, description="Highest re-encode quality.")
    downscale_probability: float = Field(0.5, ge=0, le=1, description="Chance of a downscale.")
    downscale_min: float = Field(0.4, gt=0, le=1, description="Smallest downscale factor.")
    blur_probability: float = Field(0.3, ge=0, le=1, description="Chance of a Gaussian blur.")
    blur_sigma_max: float = Field(1.5, ge=0, description="Largest Gaussian blur sigma.")
    crop_scale_min: float = Field(
        0.5, gt=0, le=1, description="Smallest random crop area, as a share of the image."
    )
    flip_probability: float = Field(0.5, ge=0, le=1, description="Chance of a horizontal flip.")


class TrainingSettings(Section):
    backbone: str = Field(
        "clip_vit_b16",
        description="Registered backbone: clip_vit_b16 (frozen packaged encoder, only the head "
        "trains) or tf_efficientnet_lite0 (fine-tuned, fast).",
    )
    encoder_layer: int | None = Field(
        None, ge=1, description="Frozen encoders: layer whose tokens feed the head (None: 7)."
    )
    encoder_precision: Literal["dynamic_int8", "static_int8"] = Field(
        "static_int8",
        description="Frozen encoders: dynamic_int8 runs the packaged graph as it is (one image "
        "at a time); static_int8 calibrates each activation's range on training images, so "
        "batches run as one (see the model card for the speed and accuracy of each).",
    )
    encoder_runtime: Literal["onnxruntime", "openvino"] = Field(
        "openvino",
        description="Frozen encoders: the runtime features are measured and served on "
        "(ONNX Runtime stands in where OpenVINO is not installed).",
    )
    encoder_weight_bits: Literal[7, 8] = Field(
        7,
        description="Frozen static INT8 encoders: bits the packaged weights keep. 7 computes the "
        "same features on every x86 CPU; 8 overflows the integer kernels of CPUs without VNNI "
        "(AVX2 only), whose features then come out wrong.",
    )
    encoder_token_merges: int = Field(
        0,
        ge=0,
        description="Frozen ViT encoders: patch tokens merged into their most similar "
        "neighbour after each layer but the last, so later layers run on fewer tokens (token "
        "merging; 0: none). Fewer operations, features a little further from the unmerged "
        "ones: see the model card for what it costs on unseen sources.",
    )
    calibration_images: int = Field(
        128, ge=1, description="Frozen static INT8 encoders: training images that set the ranges."
    )
    calibration_quantile: float = Field(
        1.0,
        gt=0.5,
        le=1.0,
        description="Frozen static INT8 encoders: each activation's range runs between this "
        "quantile of its sampled calibration values and its mirror (1.0: their minimum and "
        "maximum).",
    )
    head_c: float = Field(
        0.01,
        gt=0,
        description="Frozen encoders: inverse L2 strength of the logistic head (small C "
        "generalised best to held-out sources).",
    )
    feature_views: int = Field(
        2, ge=0, description="Frozen encoders: augmented views per training image."
    )
    source_weighting: Literal["none", "sqrt", "balanced"] = Field(
        "none",
        description="How training weighs each (source, label) group of images (frozen "
        "encoders: sample weights of the head; fine-tuning: a weighted sampler). none: as "
        "found, the frozen head balancing the classes (a large source dominates); balanced: "
        "every group weighs the same; sqrt: by the inverse square root of its size.",
    )
    boosted_sources: list[str] = Field(
        [],
        description="Sources each of whose (source, label) groups weighs boost_weight "
        "average groups of the other sources, however few its images: a handful "
        "of photos from where the model fails still moves the head (retraining adds its "
        "reviewed feedback here).",
    )
    # 3 rather than 1: with 40 reviewed photos, ROC-AUC on the rest of the new source rose by
    # 0.009 on average over the five shared sets, and on sources nobody reviewed it moved by
    # -0.008 to +0.010 (model card, "How strongly to boost the reviews").
    boost_weight: float = Field(
        3.0,
        gt=0,
        le=20,
        description="How many average groups each group of a boosted source weighs.",
    )
    pretrained: bool = Field(True, description="Start from offline ImageNet weights.")
    weights_path: str = Field(
        "", description="Local checkpoint for backbones without packaged weights (optional)."
    )
    freeze_blocks: int = Field(
        3, ge=0, description="Stem plus this many early blocks stay frozen (speed, stability)."
    )
    epochs: int = Field(8, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(32, ge=1, description="Training batch size.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate of the head.")
    backbone_lr_scale: float = Field(
        0.3, gt=0, le=1, description="Backbone learning rate as a share of the head's."
    )
    weight_decay: float = Field(0.02, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(0.5, ge=0, description="Linear warm-up before the cosine decay.")
    patience: int = Field(3, ge=1, description="Epochs without validation-AUC gain before stop.")
    seed: int = Field(0, description="Seed of weights order, augmentation and shuffling.")
    workers: int = Field(2, ge=0, description="Data-loading worker processes.")
    threads: int = Field(0, ge=0, description="Torch intra-op threads (0: library default).")
    max_images: int = Field(
        0, ge=0, description="Cap on training images per epoch (0: all), for quick runs."
    )
    parity_tolerance: float = Field(
        1e-4,
        gt=0,
        description="Largest difference allowed between ONNX and PyTorch outputs, relative to "
        "each output's largest magnitude when above 1 (feature maps reach tens).",
    )
    onnx_opset: int = Field(17, ge=13, description="ONNX opset of the exported model.")
    drift_reference_size: int = Field(
        512, ge=16, description="Validation images kept as the drift reference sample."
    )
    output_dir: str = Field("runs", description="Folder where training runs write bundles.")
    augment: AugmentSettings = Field(
        default_factory=AugmentSettings, description="Training augmentations."
    )


class CalibrationSettings(Section):
    target_fpr: float = Field(
        0.02, gt=0, lt=1, description="Largest share of real photos labelled AI on validation."
    )
    ai_band_fpr: float = Field(
        0.02,
        gt=0,
        lt=1,
        description="Largest share of real photos in the 'ai' band, on every held-out source "
        "with enough real photos (out-of-source predictions; validation when there is one "
        "source).",
    )
    min_source_reals: int = Field(
        20, ge=1, description="Real photos a held-out source needs to set the 'ai' band alone."
    )
    ai_band_rule: Literal["strictest_source", "source_average"] = Field(
        "strictest_source",
        description="How the sources' real photos set the 'ai' band: strictest_source keeps "
        "every source within ai_band_fpr; source_average keeps their average share (each source "
        "weighing alike) within it.",
    )
    cross_fit_folds: int = Field(
        5,
        ge=2,
        le=20,
        description="Parts a boosted source (reviewed feedback) is scored in, each by a detector "
        "fitted on everything else: its bands then follow what the reviews taught.",
    )
    real_band_fnr: float = Field(
        0.01, gt=0, lt=1, description="Largest share of AI images in the 'real' band."
    )
    reviewed_ai_band_fpr: float | None = Field(
        0.05,
        gt=0,
        lt=1,
        description="The 'ai' band for photos of the kind a team reviewed (a retrain on "
        "boosted sources): set as ai_band_fpr is, at this share. Looser than ai_band_fpr, it "
        "catches more of the new source's AI photos where the reviews taught the model, and "
        "little elsewhere. null: one band for all photos.",
    )
    reviewed_kind_quantile: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of the reviewed photos (each scored by a classifier fitted without "
        "it) that count as their own kind; the bound it sets decides which photos get the "
        "reviewed band. Lower keeps the band to photos more like the reviewed ones.",
    )
    ece_bins: int = Field(15, ge=2, description="Bins of the expected calibration error.")


class AbstentionSettings(Section):
    enabled: bool = Field(True, description="Answer 'uncertain' for photos unlike training.")
    neighbours: int = Field(10, ge=1, description="Nearest training embeddings averaged.")
    components: int = Field(32, ge=1, description="PCA dimensions of the distance.")
    # 0.95 rather than 0.99: real photos of an unseen source that reach the 'ai' band tend to
    # lie further from the training data than the training sources' own photos (model card: 5
    # of 50 at 0.99, 1 at 0.95), for 1.4 points more 'uncertain' on the training sources.
    quantile: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="Share of held-out in-source images that must count as familiar.",
    )
    widen_with_reviews: bool = Field(
        True,
        description="Photos near reviewed feedback (boosted sources) count as familiar: "
        "their kind was reviewed, so the abstention no longer holds it back.",
    )


class QualityGateSettings(Section):
    min_roc_auc: float = Field(0.90, ge=0, le=1, description="Minimum test ROC-AUC.")
    min_source_roc_auc: float = Field(
        0.70,
        ge=0,
        le=1,
        description="Minimum mean leave-one-source-out ROC-AUC over held-out sources. With "
        "champion_bundle, a mean below it refuses only when it is also below the champion's on "
        "the sources both were measured on by more than their sizes explain (one-sided, at "
        "significance).",
    )
    max_source_ai_band_fpr: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest share of held-out sources' real photos in the 'ai' band, pooled.",
    )
    max_each_source_ai_band_fpr: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Largest share of one held-out source's real photos in the 'ai' band (sources "
        "with at least calibration.min_source_reals real photos; fewer are noise).",
    )
    significance: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="A share gate on held-out real photos refuses only when the share is above "
        "its limit by more than the number of photos can explain: a one-sided binomial test "
        "of the count against the limit must reject at this level (3 of 50 against 5 % does "
        "not; 20 of 200 does).",
    )
    champion_bundle: str | None = Field(
        None,
        description="A bundle folder to compare with (retrain sets the served model): a held-out "
        "source's share gate then refuses only when the new model also puts more of that "
        "source's real photos in the 'ai' band than this one did, beyond what their number "
        "can explain (one-sided Fisher exact test at the same significance).",
    )
    max_ece: float = Field(0.08, ge=0, le=1, description="Maximum calibrated test ECE.")
    max_robust_auc_drop: float = Field(
        0.10, ge=0, le=1, description="Largest AUC drop allowed under any robustness transform."
    )
    max_quantization_auc_cost: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Largest test ROC-AUC an INT8 variant may lose against its float model.",
    )


class EvaluationSettings(Section):
    robustness: list[str] = Field(
        ["jpeg95", "jpeg75", "downscale0.5", "blur1"],
        description="Robustness transforms evaluated (jpegQ, downscaleF, blurS).",
    )
    batch_size: int = Field(32, ge=1, description="Batch size of evaluation inference.")
    leave_one_source_out: bool = Field(
        True,
        description="Fit one model per source without it and score it there (needs two or "
        "more sources; with a fine-tuned backbone each fold is a full training run).",
    )


class MlflowSettings(Section):
    tracking_uri: str = Field("sqlite:///mlruns.db", description="MLflow tracking URI.")
    experiment: str = Field("ai-photo-detector", description="MLflow experiment name.")
    enabled: bool = Field(True, description="Log training runs to MLflow.")


class InferenceSettings(Section):
    intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads (0: one per available CPU, unpinned)."
    )
    inter_op_threads: int = Field(1, ge=0, description="ONNX Runtime inter-op threads.")
    runtime: Literal["auto", "recipe", "onnxruntime", "openvino"] = Field(
        "auto",
        description="Runtime of the model's graph: the one its recipe names (recipe), or another "
        "whose probe the bundle recorded (ONNX Runtime's always is); auto follows the recipe "
        "except on CPUs without VNNI, where it takes ONNX Runtime: there it ran the default's "
        "INT8 graph about twice as fast as OpenVINO (model card, Speed).",
    )
    batch_size: int = Field(16, ge=1, description="Images per inference call in the CLI.")

    spinning: Literal["adaptive", "during_run", "always", "never"] = Field(
        "adaptive",
        description="When idle ONNX Runtime threads busy-wait for work. adaptive: a lone image "
        "runs on a session that spins during its run (fast), batches on one that never spins "
        "(cores left to decoding; costs a second session's memory). Otherwise one session: "
        "during_run, always or never.",
    )


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server binds.")
    workers: int = Field(1, ge=1, description="Server worker processes.")
    malloc_arena_max: int | None = Field(
        2,
        ge=1,
        description="Cap on glibc malloc arenas of the serving process and its children (null: "
        "glibc's default, eight per core); 2 kept 14-28 % less memory after load in four soak "
        "A/B pairs, with no throughput cost told apart from noise (docs/reliability.md).",
    )
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted body.")
    max_discard_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="An over-limit body is read and dropped up to this many bytes, so clients "
        "that send it whole before reading (most SDKs) receive their 413 instead of a reset "
        "connection; beyond it the connection is dropped.",
    )
    max_batch_items: int = Field(32, ge=1, description="Most images in one batch request.")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request head (line and headers): 431 beyond."
    )
    max_headers: int = Field(100, ge=8, description="Most request headers: 431 beyond.")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time a connection has to send a complete request head (408 and closed "
        "after it): slow or silent clients do not hold connections.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time an image request's body may take to arrive, whatever its "
        "pace (a client trickling a byte a second is answered 408 then).",
    )
    accepted_formats: list[str] = Field(
        ["JPEG", "PNG", "WEBP", "GIF"],
        description="Image formats accepted by the API, decided by magic bytes.",
    )
    cors_origins: list[str] = Field(
        [], description="Browser origins allowed to call the API (CORS); empty: none."
    )
    max_batch_size: int = Field(
        8, ge=1, description="Most images per micro-batch (8 is fastest per image on 2 cores)."
    )
    max_queue_delay_ms: float = Field(4.0, ge=0, description="Longest wait to fill a micro-batch.")
    max_queue_size: int = Field(256, ge=1, description="Queued images before answering 503.")
    decode_threads: int = Field(2, ge=1, description="Threads decoding and preprocessing images.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds on 503 and 429.")
    access_log: bool = Field(
        False,
        description="Log one line per request (uvicorn's access log; ~5 % of throughput for "
        "single requests). /metrics counts every request and the store logs every prediction.",
    )
    graceful_timeout_s: float = Field(
        20.0, ge=0, description="Seconds in-flight requests get to finish on shutdown."
    )
    ui: bool = Field(True, description="Serve the review page (explain, give feedback) at /ui/.")
    docs: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Interactive docs at /docs and /redoc, with /openapi.json open: auto serves "
        "them only where no API key is required; else /openapi.json needs a valid key.",
    )
    compat_v1: bool = Field(
        False,
        description="Also answer the original v1.0 API (POST /predict, /predict/batch, "
        "/predict/explain and GET /health, in its response shapes) from this service's own "
        "model, auth and rate limits: a migration aid, left out of the OpenAPI document "
        "(env APD_SERVER__COMPAT_V1).",
    )


class ApiKeyEntry(Section):
    id: str = Field(min_length=1, max_length=64, description="Key id, logged instead of the key.")
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key (never the key)."
    )
    scopes: list[str] = Field(
        ["predict"], description="Granted scopes: predict, jobs, review, ops, admin."
    )
    webhook_secret: str | None = Field(
        None,
        min_length=16,
        description="Signs this key's job webhooks (else webhooks.secret); the integrator "
        "verifies with it.",
    )
    expires_at: datetime | None = Field(
        None,
        description="Refused from this moment on (401 api_key_expired); ISO 8601 with a zone.",
    )


class AuthSettings(Section):
    mode: Literal["auto", "required", "disabled"] = Field(
        "auto", description="auto: keys required in production, optional in development."
    )
    keys: list[ApiKeyEntry] = Field([], description="Accepted API keys, stored as hashes.")
    keys_file: str | None = Field(
        None,
        description="A YAML or JSON file of further key entries (a list, or {keys: [...]}), "
        "re-read when it changes: a mounted Kubernetes Secret, a Vault Agent template. Rotate "
        "a key by adding the new entry, then removing the old one; no restart.",
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="How often the keys file is checked for a change."
    )
    open_paths: list[str] = Field(
        ["/v2/health/live", "/v2/health/ready", "/metrics"],
        description="Paths answered without a key.",
    )


class RateLimitSettings(Section):
    enabled: bool = Field(True, description="Apply rate limits.")
    limit: str = Field(
        "600/minute", description="Limit per API key (or client address), `limits` notation."
    )
    storage_uri: str = Field(
        "memory://", description="memory:// for one replica, redis://HOST:PORT for several."
    )
    key_prefix: str = Field("apd", description="Prefix of rate-limit keys in shared storage.")
    strategy: Literal["fixed-window", "moving-window", "sliding-window-counter"] = Field(
        "moving-window", description="Rate-limiting algorithm."
    )
    trusted_proxies: list[str] = Field(
        [], description="Proxy addresses (CIDR) whose X-Forwarded-For is believed."
    )
    on_storage_error: Literal["local", "refuse"] = Field(
        "local",
        description="When shared storage (Redis) fails: count in this replica's memory until "
        "it answers again (local), or answer 503 rate_limit_unavailable (refuse).",
    )
    storage_retry_s: float = Field(
        5.0, gt=0, description="After a storage failure, seconds before it is tried again."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def valid_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # raises ValueError with the bad entry
        return value

    @field_validator("limit")
    @classmethod
    def valid_limit(cls, value: str) -> str:
        from limits import parse

        parse(value)
        return value


class PredictionLogSettings(Section):
    enabled: bool = Field(True, description="Write every prediction to the store.")
    queue_size: int = Field(
        10_000, ge=1, description="Predictions waiting to be written; beyond it they are dropped."
    )
    batch_size: int = Field(256, ge=1, description="Rows written per database transaction.")
    flush_interval_s: float = Field(0.5, gt=0, description="Longest wait before a write.")
    store_images: bool = Field(False, description="Also keep the uploaded image files.")
    durable: bool = Field(
        False,
        description="Append every row to a local spool before its answer is sent, so a killed "
        "process loses none: the next start replays them (a file append per prediction).",
    )
    spool_dir: str = Field("data/spool/predictions", description="Folder of the durable spool.")
    spool_fsync: bool = Field(
        False, description="fsync each spooled row: survives power loss too, at a disk write each."
    )
    retry_first_s: float = Field(
        1.0, gt=0, description="First wait before retrying a write the database refused."
    )
    retry_most_s: float = Field(30.0, gt=0, description="Longest wait between such retries.")
    image_dir: str = Field("data/images", description="Folder of stored images.")
    retention_days: int = Field(30, ge=1, le=36_500, description="Days stored images are kept.")


class MonitoringSettings(Section):
    enabled: bool = Field(True, description="Run drift and live-accuracy checks in the background.")
    interval_s: float = Field(300.0, gt=0, description="Seconds between background checks.")
    window_count: int = Field(500, ge=10, description="Count window: the latest N predictions.")
    window_hours: float = Field(24.0, gt=0, description="Time window: predictions of the last H h.")
    min_window: int = Field(100, ge=10, description="Fewest predictions worth a drift test.")
    max_window: int = Field(5000, ge=10, description="Most predictions read for a time window.")
    alpha: float = Field(0.01, gt=0, lt=1, description="False-alarm level of a whole drift report.")
    psi_critical: float = Field(0.25, gt=0, description="Score PSI that makes drift critical.")
    pca_components: int = Field(16, ge=1, description="PCA dimensions of the embedding test.")
    permutations: int = Field(200, ge=10, description="Permutations of the embedding MMD test.")
    accuracy_window_hours: float = Field(
        168.0, gt=0, description="Window of reviewed predictions behind live accuracy."
    )


class RegistrySettings(Section):
    model_name: str = Field("ai-photo-detector", description="MLflow registered model name.")
    cache_dir: str = Field(".cache/models", description="Local cache of downloaded bundles.")
    auc_tolerance: float = Field(
        0.0, ge=0, description="How much lower a promoted version's ROC-AUC may be."
    )
    poll_interval_s: float = Field(
        0.0, ge=0, description="Seconds between alias checks that reload moved aliases (0: off)."
    )


class GuardSettings(Section):
    min_requests: int = Field(50, ge=1, description="Canary requests before the guard judges.")
    max_error_rate: float = Field(0.05, ge=0, le=1, description="Largest challenger error rate.")
    max_p95_ms: float = Field(2000.0, gt=0, description="Largest challenger p95 latency.")
    max_disagreement: float = Field(
        0.3, ge=0, le=1, description="Largest label disagreement with the champion."
    )
    min_live_accuracy: float = Field(
        0.8, ge=0, le=1, description="Lowest challenger live accuracy (with enough feedback)."
    )
    min_feedback: int = Field(20, ge=1, description="Reviewed predictions before accuracy counts.")


class RolloutSettings(Section):
    challenger: str = Field(
        "", description="Challenger model: a bundle folder or models:/NAME@ALIAS (empty: none)."
    )
    shadow_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of traffic mirrored to the challenger."
    )
    shadow_queue: int = Field(64, ge=1, description="Mirror requests in flight before dropping.")
    canary_weight: float = Field(
        0.0, ge=0, le=1, description="Share of callers answered by the challenger."
    )
    sticky_header: str = Field(
        "X-Canary-Key", description="Header that pins a caller to a side (else the API key)."
    )
    guard: GuardSettings = Field(default_factory=GuardSettings, description="Canary guard.")


class ReviewSettings(Section):
    lease_s: float = Field(
        300.0, gt=0, le=86_400, description="How long a claimed item stays a reviewer's own."
    )
    sample_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Share of confident answers queued for quality-control review.",
    )
    order: Literal["least_certain", "oldest"] = Field(
        "least_certain",
        description="Order of the uncertain items: least_certain puts those scored nearest the "
        "model's label threshold first (they teach a retrain most), oldest keeps arrival order.",
    )


class RegionSettings(Section):
    """Where this deployment runs when there are several (docs/deploy.md, "Several regions")."""

    name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]{1,8}$",
        description="This region's name: it tags the ids of the predictions and jobs made here, "
        "and the X-APD-Region answer header.",
    )
    peers: dict[str, str] = Field(
        {},
        description="Other regions by name -> their base URL: feedback for a prediction made "
        "there is passed on (503 region_unavailable while that region is down).",
    )
    peer_timeout_s: float = Field(5.0, gt=0, le=60, description="Time allowed to a peer.")


class WebhookSettings(Section):
    """Job webhooks: where they may go and how hard delivery tries."""

    enabled: bool = Field(True, description="Accept a callback_url on job submission.")
    secret: str | None = Field(
        None,
        min_length=16,
        description="Signs the webhooks of keys without their own webhook_secret (and of "
        "anonymous callers where keys are optional).",
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Host names a callback may target ('hooks.example.com', '*.example.com'); "
        "empty: any host whose addresses are public.",
    )
    allowed_networks: list[str] = Field(
        [],
        description="Networks (CIDR) a callback may reach although they are loopback, "
        "link-local, private or metadata addresses (refused otherwise).",
    )
    schemes: list[Literal["https", "http"]] = Field(
        ["https"], description="URL schemes a callback may use."
    )
    timeout_s: float = Field(10.0, gt=0, le=60, description="Time allowed per attempt.")
    backoff_s: float = Field(
        2.0, gt=0, description="Wait after the first failed attempt; doubles each time."
    )
    max_backoff_s: float = Field(600.0, gt=0, description="Longest wait between attempts.")
    give_up_after_s: float = Field(
        86400.0, gt=0, description="Stop trying this long after the job finished."
    )
    poll_interval_s: float = Field(
        1.0, gt=0, description="How often the service looks for events that are due."
    )


class JobsSettings(Section):
    enabled: bool = Field(True, description="Accept batch jobs at /v1/jobs.")
    queue_url: str = Field(
        "sqlite:///apd-queue.db",
        description="Job queue: a SQLite file (embedded default) or redis://… for replicas.",
    )
    queue_name: str = Field("ai-photo-detector-jobs", description="Queue name in its store.")
    in_process: bool = Field(
        True, description="The service also works jobs off (else only `ai-photo-detector worker`)."
    )
    threads: int = Field(
        0, ge=0, description="Threads working jobs off per process (0: one per CPU)."
    )
    spool_dir: str = Field(
        "data/jobs", description="Uploaded archives; shared storage when workers run elsewhere."
    )
    storage_roots: list[str] = Field(
        [],
        description="Where manifests may point: folders, or fsspec URLs such as s3://bucket/p/.",
    )
    chunk_size: int = Field(32, ge=1, le=4096, description="Images per unit of queued work.")
    lease_s: float = Field(
        60.0, gt=0, description="A chunk whose worker is silent this long is given to another."
    )
    max_attempts: int = Field(
        3, ge=1, description="Tries of a chunk before its images are answered with an error."
    )
    reap_interval_s: float = Field(
        5.0, gt=0, description="Seconds between checks for chunks whose worker went silent."
    )
    max_archive_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest uploaded archive (compressed)."
    )
    upload_timeout_s: float = Field(
        3600.0, gt=0, description="Longest time an archive upload may take to arrive."
    )
    max_expanded_bytes: int = Field(
        8 * 1024**3, ge=1, description="Largest sum of the images' sizes inside an archive."
    )
    max_compression_ratio: float = Field(
        200.0, gt=1, description="Largest expanded/compressed size of a member (bombs refused)."
    )
    max_images_per_job: int = Field(100_000, ge=1, description="Most images in one job.")
    max_active_jobs_per_key: int = Field(
        4, ge=1, description="Queued or running jobs one API key may have."
    )
    max_active_images_per_key: int = Field(
        200_000, ge=1, description="Images in one API key's queued or running jobs."
    )
    retention_days: int = Field(
        30, ge=1, le=36_500, description="Days finished jobs and their results are kept."
    )


class RetrainingSettings(Section):
    data: list[str] = Field(
        [], description="Base dataset folders the reviewed feedback is added to."
    )
    recipe: str | None = Field(
        None,
        description="YAML settings of the recipe (e.g. configs/default-model.yaml); "
        "else these settings' own training section.",
    )
    feedback_days: int = Field(
        90, ge=1, le=36_500, description="Reviewed predictions of the last N days join."
    )
    on_alert: bool = Field(False, description="Alertmanager alerts below may start a retrain.")
    alerts: list[str] = Field(
        ["APDDriftCritical", "APDLiveAccuracyDrop"],
        description="Alert names that start a retrain when on_alert is on.",
    )
    cooldown_hours: float = Field(
        24.0, ge=0, description="Least time between two retrains started by alerts."
    )
    shadow_fraction: float = Field(
        0.0, ge=0, le=1, description="After a retrain started here: mirror this share to it."
    )
    timeout_hours: float = Field(12.0, gt=0, description="A retrain running longer is stopped.")
    boost_feedback: bool = Field(
        True,
        description="Train with the reviewed feedback as a boosted source "
        "(training.boosted_sources): 20 reviewed photos of a new source then count as much "
        "as a whole source.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APD_",
        env_nested_delimiter="__",
        env_parse_none_str="null",  # e.g. APD_SERVER__MALLOC_ARENA_MAX=null
        extra="forbid",
        frozen=True,
    )

    environment: Literal["development", "production"] = Field(
        "development", description="production requires API keys unless auth.mode says not."
    )
    database_url: str = Field(
        "sqlite:///apd.db",
        description="Store: SQLite file (embedded default) or postgresql+psycopg://… at scale.",
    )
    model: str = Field(
        default_factory=default_model_path,
        description="Model to use: a bundle folder (later also a registry reference).",
    )
    imaging: ImagingSettings = Field(
        default_factory=ImagingSettings, description="Decoding limits and model input size."
    )
    provenance: ProvenanceSettings = Field(
        default_factory=ProvenanceSettings, description="C2PA Content Credentials and policy."
    )
    data: DataSettings = Field(default_factory=DataSettings, description="Datasets and splits.")
    training: TrainingSettings = Field(
        default_factory=TrainingSettings, description="Training run."
    )
    calibration: CalibrationSettings = Field(
        default_factory=CalibrationSettings, description="Temperature, threshold and bands."
    )
    abstention: AbstentionSettings = Field(
        default_factory=AbstentionSettings, description="'uncertain' for unfamiliar photos."
    )
    gates: QualityGateSettings = Field(
        default_factory=QualityGateSettings, description="Minimums a deployable model meets."
    )
    evaluation: EvaluationSettings = Field(
        default_factory=EvaluationSettings, description="Evaluation report."
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="MLflow tracking.")
    inference: InferenceSettings = Field(
        default_factory=InferenceSettings, description="ONNX Runtime."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP server.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys and scopes.")
    prediction_log: PredictionLogSettings = Field(
        default_factory=PredictionLogSettings, description="Prediction log."
    )
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings, description="Drift and live accuracy."
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings, description="MLflow model registry."
    )
    rollout: RolloutSettings = Field(
        default_factory=RolloutSettings, description="Shadow, canary and guard."
    )

    rate_limit: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="Per-client rate limits."
    )
    jobs: JobsSettings = Field(default_factory=JobsSettings, description="Batch jobs.")
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings, description="Webhooks sent when a job finishes."
    )
    region: RegionSettings = Field(
        default_factory=RegionSettings, description="This deployment's region, and the others."
    )
    review: ReviewSettings = Field(default_factory=ReviewSettings, description="Review queue.")
    retraining: RetrainingSettings = Field(
        default_factory=RetrainingSettings, description="Retraining on reviewed feedback."
    )

    @property
    def auth_required(self) -> bool:
        if self.auth.mode == "auto":
            return self.environment == "production"
        return self.auth.mode == "required"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win, field by field (nested sections are merged): keyword arguments,
        # then the environment (short names included), then the YAML file.
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            WithoutSecretFiles(settings_cls, env_settings),
            ShortEnvNames(settings_cls),
            SecretFiles(settings_cls),
        ]
        yaml_file = settings_cls.model_config.get("yaml_file") or os.environ.get("APD_CONFIG")
        if yaml_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


class SecretFiles(PydanticBaseSettingsSource):
    """The ``_FILE`` convention of official container images: ``APD_DATABASE_URL_FILE=/run/
    secrets/db`` sets ``database_url`` to that file's content (``APD_AUTH__KEYS_FILE`` is not
    one of these: ``auth.keys_file`` is a setting of its own, re-read while serving).

    So no secret has to sit in an environment variable, where ``ps e`` and crash reports can
    show it. Text settings take the file as it is (one trailing newline dropped); others
    (lists, sections) read it as YAML or JSON.
    """

    SUFFIX = "_FILE"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is returned by __call__

    @classmethod
    def variables(cls, settings_cls: type[BaseModel]) -> dict[str, tuple[list[str], Any]]:
        """``APD_…_FILE`` variables that name a setting's file: variable -> the setting's path
        and its field."""
        found = {}
        for variable in os.environ:
            if not (variable.startswith("APD_") and variable.endswith(cls.SUFFIX)):
                continue
            names = variable[len("APD_") : -len(cls.SUFFIX)].lower().split("__")
            field = _field_at(settings_cls, names)
            direct = [*names[:-1], names[-1] + "_file"]
            if field is not None and _field_at(settings_cls, direct) is None:
                found[variable] = (names, field)
        return found

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, (names, field) in self.variables(self.settings_cls).items():
            plain = variable.removesuffix(self.SUFFIX)
            if os.environ.get(plain):
                raise ValueError(f"both {plain} and {variable} are set; they are exclusive")
            path = os.environ[variable]
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from exc
            value = text.removesuffix("\n") if _is_text(field) else yaml.safe_load(text)
            section = found
            for name in names[:-1]:
                section = section.setdefault(name, {})
            section[names[-1]] = value
        return found


class WithoutSecretFiles(PydanticBaseSettingsSource):
    """The environment, less the ``_FILE`` variables :class:`SecretFiles` reads (the plain
    environment source would take ``APD_WEBHOOKS__SECRET_FILE`` for a setting ``secret_file``)."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is returned by __call__

    def __call__(self) -> dict[str, Any]:
        values = self.env()
        for names, _ in SecretFiles.variables(self.settings_cls).values():
            section: Any = values
            for name in names[:-1]:
                section = section.get(name) if isinstance(section, dict) else None
            if isinstance(section, dict):
                section.pop(names[-1] + "_file", None)
        return values


def _field_at(model: type[BaseModel], names: list[str]) -> Any:
    """The pydantic field at a nested path, or None."""
    field = None
    for i, name in enumerate(names):
        field = model.model_fields.get(name)
        if field is None:
            return None
        if i < len(names) - 1:
            inner = field.annotation
            if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
                return None
            model = inner
    return field


def _is_text(field: Any) -> bool:
    return field.annotation in (str, str | None)


class ShortEnvNames(PydanticBaseSettingsSource):
    """Documented short names of nested settings, read with the environment's precedence."""

    NAMES: ClassVar[dict[str, tuple[str, str]]] = {
        "APD_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri")
    }

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is returned by __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for variable, (section, name) in self.NAMES.items():
            value = os.environ.get(variable)
            if value:
                found.setdefault(section, {})[name] = value
        return found


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings, reading ``config_file`` (else ``APD_CONFIG``) as YAML when given.

    Reads the environment, never writes it: the file is named on a subclass's configuration.
    """
    if config_file is None:
        return Settings(**overrides)
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": str(path)})
    configured = type("Settings", (Settings,), {"model_config": config})
    settings: Settings = configured(**overrides)
    return settings
