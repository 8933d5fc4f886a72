"""The new-source drill: a generator the detector never saw, k of its photos reviewed through the
real path, and what the retrained challenger then does on the rest of that source.

For each held-out source S (one of the shared sets):

1. the detector is trained without S (the shipped recipe, ``configs/default-model.yaml``);
2. S is split at random into a pool (60 %) and a test part (40 %), the same for every choice;
   the detector serves (``ai-photo-detector serve``, images stored) and k pool photos are
   reviewed, chosen one of two ways (``--choice``): ``balanced``, half real and half AI at
   random (scored over HTTP with the client, true verdicts through ``/v1/feedback``); or
   ``queue``, the whole pool scored and a reviewer taking the review queue in its order
   (``/v1/review/claim`` then ``/v1/review/items/{id}/verdict``, k times: the least certain
   first), topped up at random when fewer wait;
3. ``ai-photo-detector retrain`` (the other sources as base data, the feedback boosted, the
   gates as configured, compared with the base detector as the champion in service) makes
   the challenger, registered or refused;
4. base and challenger score S's test part: ROC-AUC, the ``ai`` band's recall (share of AI
   photos answered ``ai``) and false-positive rate (share of real photos answered ``ai``), the
   share ``uncertain``; and the retrain's wall time.

Beside it, the probe: a plain logistic head (C = 0.01, class-balanced, standardised, one plain
view per image) on the base detector's own embedding of the same photos, fitted on the other
sources plus the same k reviewed photos (weighted as one average source). The gap between the
pipeline's and the probe's ROC-AUC is what the pipeline loses of what the k reviews could teach.

Run: .venv/bin/python -m benchmarks.new_source [--source realorai-photoreal ...] [--k 10 20 40 80]
     [--draws 3] [--first-draw 0] [--choice balanced queue] [--boost-weight 1 3]. Each (source,
     choice, boost, k, draw) costs one retrain (about 4 minutes on 2 cores), each source one
     base training more. Results: results/new_source.csv, one row per run, added to the earlier
     runs' rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ai_photo_detector.cli.file_predictions import predict_files
from ai_photo_detector.client import Client
from ai_photo_detector.data.discovery import Sample, discover
from ai_photo_detector.evaluation.metrics import safe_auc
from ai_photo_detector.imaging import file_limits, preprocess_bytes
from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.inference import OnnxDetector
from ai_photo_detector.settings import Settings
from ai_photo_detector.training.backbones.frozen import fit_linear_head
from ai_photo_detector.training.weighting import group_weights
from benchmarks.common import append_csv, print_table
from benchmarks.http_load import free_port

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SOURCES = [
    "shoes-midjourney",
    "diffusiondb-coco",
    "playground-mixed",
    "chatgpt-gemini",
    "realorai-photoreal",
]
RECIPE = ROOT / "configs" / "default-model.yaml"


def _cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "ai_photo_detector.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr[-3000:]}")
    return done


@dataclass
class Workspace:
    folder: Path
    boost_weight: float  # training.boost_weight of the retrain

    def env(self, store: str) -> dict[str, str]:
        return {
            **os.environ,
            "APD_TRAINING__BOOST_WEIGHT": str(self.boost_weight),
            "APD_CONFIG": str(RECIPE),
            "APD_TRAINING__OUTPUT_DIR": str(self.folder / "runs"),
            "APD_MLFLOW_TRACKING_URI": f"sqlite:///{self.folder / 'mlflow.db'}",
            "APD_REGISTRY__CACHE_DIR": str(self.folder / "models"),
            "APD_DATABASE_URL": f"sqlite:///{self.folder / store}.db",
        }


def train_base(work: Workspace, held_out: str) -> Path:
    """The detector trained without ``held_out``: the bundle folder (one a kept work folder
    already holds is used again)."""
    kept = sorted((work.folder / "runs").glob(f"*without-{held_out}/bundle/manifest.json"))
    if kept:
        return kept[-1].parent
    data = [str(DATASETS / s) for s in SOURCES if s != held_out]
    args = ["train", *[a for d in data for a in ("--data", d)], "--version", f"without-{held_out}"]
    done = _cli(work.env(f"base-{held_out}"), *args, check=False)
    manifests = sorted((work.folder / "runs").glob(f"*without-{held_out}/bundle/manifest.json"))
    if not manifests:
        raise RuntimeError(f"no bundle from the base training: {done.stderr[-3000:]}")
    return manifests[-1].parent


def review(
    work: Workspace, bundle: Path, store: str, scored: list[Sample], choose: int | None = None
) -> tuple[list[Sample], float]:
    """Score ``scored`` through a running service (images kept) and send verdicts: for all of
    them, or (``choose`` = k) for the first k the review queue hands out, as a reviewer who
    takes the queue in its order would, topped up at random if it holds fewer. Returns the
    reviewed photos and the seconds it took."""
    port = free_port()
    env = {
        **work.env(store),
        "APD_MODEL": str(bundle),
        "APD_SERVER__PORT": str(port),
        "APD_PREDICTION_LOG__STORE_IMAGES": "true",
        "APD_PREDICTION_LOG__IMAGE_DIR": str(work.folder / "images" / store),
        "APD_RATE_LIMIT__ENABLED": "false",
        "APD_JOBS__ENABLED": "false",
        "APD_MONITORING__ENABLED": "false",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "ai_photo_detector.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.monotonic()
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.ready().ready:
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.2)
            if choose is None:
                for sample in scored:
                    answer = client.predict(sample.path)
                    client.feedback(answer.prediction_id, sample.label, source="new-source-drill")
                reviewed = scored
            else:
                reviewed = _review_from_queue(client, scored, choose)
    finally:
        server.terminate()  # drains: the prediction log is flushed before it exits
        server.wait(60)
    return reviewed, time.monotonic() - started


def _review_from_queue(client: Client, pool: list[Sample], k: int) -> list[Sample]:
    """A reviewer's path: claim the next item, give its verdict, k times."""
    by_id = {client.predict(sample.path).prediction_id: sample for sample in pool}
    # The prediction log writes in the background: wait until the queue stops growing.
    deadline, seen = time.monotonic() + 60, -1
    while time.monotonic() < deadline:
        waiting = sum(client.review_queue(limit=1).counts.values())
        if waiting == seen and waiting > 0:
            break
        seen = waiting
        time.sleep(1.0)
    chosen: list[Sample] = []
    while len(chosen) < k:
        item = client.review_claim().item
        if item is None or item.prediction_id not in by_id:
            break
        sample = by_id[item.prediction_id]
        client.review_verdict(item.prediction_id, sample.label)
        chosen.append(sample)
    # Fewer waiting than k (the queue holds uncertain and sampled answers): top up at random.
    ids = {sample.path: prediction_id for prediction_id, sample in by_id.items()}
    rest = [s for s in pool if s not in chosen]
    for sample in random.Random(0).sample(rest, max(0, min(k - len(chosen), len(rest)))):
        client.feedback(ids[sample.path], sample.label, source="new-source-drill")
        chosen.append(sample)
    return chosen


def retrain(work: Workspace, held_out: str, store: str, base: Path) -> dict[str, Any]:
    """``retrain`` as the team serving ``base`` runs it: that model is the champion its gates
    compare the challenger with."""
    report = work.folder / f"{store}-retrain.json"
    data = [str(DATASETS / s) for s in SOURCES if s != held_out]
    args = ["retrain", *[a for d in data for a in ("--data", d)], "--report", str(report)]
    started = time.monotonic()
    done = _cli({**work.env(store), "APD_MODEL": str(base)}, *args, check=False)
    if not report.is_file():
        raise RuntimeError(f"retrain wrote no report: {done.stderr[-3000:]}")
    outcome: dict[str, Any] = json.loads(report.read_text())
    outcome["wall_s"] = time.monotonic() - started
    return outcome


def rates(bundle: Path, samples: list[Sample], ai_label: str) -> dict[str, float]:
    detector = OnnxDetector(load_bundle(bundle))
    found = list(predict_files(detector, [s.path for s in samples], Settings()))
    scored = [(s, r) for s, r in zip(samples, found, strict=True) if "error" not in r]
    is_ai = np.asarray([s.label == ai_label for s, _ in scored])
    band = np.asarray([r["band"] for _, r in scored])
    probability = np.asarray([r["probability"] for _, r in scored])
    return {
        "roc_auc": safe_auc(is_ai.astype(np.int64), probability),
        "ai_band_recall": float((band[is_ai] == "ai").mean()),
        "ai_band_fpr": float((band[~is_ai] == "ai").mean()),
        "uncertain": float((band == "uncertain").mean()),
    }


def embeddings(bundle: Path, samples: list[Sample]) -> np.ndarray:
    """The base detector's embedding (its head's input) of each photo's plain view."""
    detector = OnnxDetector(load_bundle(bundle))
    spec = detector.manifest.preprocessing
    limits = file_limits(Settings())
    rows = []
    batch: list[np.ndarray] = []
    for sample in samples:
        array, _ = preprocess_bytes(sample.path.read_bytes(), spec, limits)
        batch.append(array)
        if len(batch) == 16:
            rows.append(detector.run(np.stack(batch)).embedding)
            batch = []
    if batch:
        rows.append(detector.run(np.stack(batch)).embedding)
    return np.concatenate(rows).astype(np.float32)


def probe_auc(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> float:
    """A plain head on the base's features, each training source (and the reviewed photos as
    one) weighing as much as the average source, class-balanced within each."""
    chosen = np.flatnonzero(train)
    rows = [(str(g), int(y)) for g, y in zip(groups[chosen], labels[chosen], strict=True)]
    weight = group_weights(rows, "balanced")
    w, b = fit_linear_head(features[chosen], labels[chosen], 2, 0.01, 0, weight)
    logits = features[test] @ w.T + b
    return safe_auc(labels[test], logits[:, 1] - logits[:, 0])


def split(photos: list[Sample], rng: random.Random) -> tuple[list[Sample], list[Sample]]:
    """A source's photos at random into the pool reviewers pick from (60 %) and the test part
    the challenger is scored on (40 %)."""
    shuffled = rng.sample(photos, len(photos))
    return shuffled[: int(0.6 * len(photos))], shuffled[int(0.6 * len(photos)) :]


def drill(
    held_out: str,
    ks: list[int],
    draws: range,
    work: Workspace,
    choice: str = "balanced",
) -> list[dict[str, Any]]:
    settings = Settings()
    ai_label = settings.data.ai_label
    everything = discover([DATASETS / s for s in SOURCES], settings.data.extensions)
    new = [s for s in everything if s.source == held_out]
    started = time.monotonic()
    base = train_base(work, held_out)
    base_s = time.monotonic() - started
    features = embeddings(base, everything)
    labels = np.asarray([s.label == ai_label for s in everything], np.int64)
    groups = np.asarray([s.source for s in everything])
    index = {s.path: i for i, s in enumerate(everything)}
    rows = []
    for k in ks:
        for draw in draws:
            # The same split for every choice: a pool reviewers could pick from (60 %) and a
            # test part (40 %) the challenger is scored on.
            rng = random.Random(1000 * k + draw)
            pool, rest = split(new, rng)
            store = f"{held_out}-{choice}-k{k}-d{draw}-{int(time.time())}"
            if choice == "queue":
                reviewed, review_s = review(work, base, store, pool, choose=k)
            else:
                real = [s for s in pool if s.label != ai_label]
                ai = [s for s in pool if s.label == ai_label]
                picked = rng.sample(real, min(k // 2, len(real))) + rng.sample(
                    ai, min(k - k // 2, len(ai))
                )
                reviewed, review_s = review(work, base, store, picked)
            chosen = {s.path for s in reviewed}
            outcome = retrain(work, held_out, store, base)
            train_mask = (groups != held_out) | np.isin(
                np.arange(len(everything)), [index[p] for p in chosen]
            )
            groups_k = groups.copy()
            groups_k[[index[p] for p in chosen]] = "reviewed"
            test_mask = np.isin(np.arange(len(everything)), [index[s.path] for s in rest])
            probe = probe_auc(features, labels, groups_k, train_mask, test_mask)
            before = rates(base, rest, ai_label)
            after = rates(Path(outcome["bundle"]), rest, ai_label)
            calibration = load_bundle(Path(outcome["bundle"])).manifest.calibration
            row = {
                "source": held_out,
                "choice": choice,
                "boost_weight": work.boost_weight,
                "k": len(reviewed),
                "reviewed_ai": sum(s.label == ai_label for s in reviewed),
                "draw": draw,
                "base_auc": round(before["roc_auc"], 4),
                "challenger_auc": round(after["roc_auc"], 4),
                "probe_auc": round(probe, 4),
                "challenger_over_probe": round(after["roc_auc"] / probe, 3),
                "base_ai_recall": round(before["ai_band_recall"], 3),
                "ai_recall": round(after["ai_band_recall"], 3),
                "ai_fpr": round(after["ai_band_fpr"], 3),
                # the reviewed kind's own band (empty: one band for all photos)
                "reviewed_band_fpr": calibration.reviewed_ai_band_fpr or "",
                "uncertain": round(after["uncertain"], 3),
                "base_uncertain": round(before["uncertain"], 3),
                "registered": outcome.get("status") == "registered",
                "gate_failures": "; ".join(outcome.get("gate_failures", [])),
                "review_s": round(review_s, 1),
                "retrain_s": round(outcome["wall_s"], 1),
                "base_train_s": round(base_s, 1),
                "rest": len(rest),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", nargs="+", default=SOURCES, choices=SOURCES)
    parser.add_argument("--k", nargs="+", type=int, default=[10, 20, 40, 80])
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument(
        "--first-draw", type=int, default=0, help="Start at this draw (new draws, same splits)."
    )
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    parser.add_argument(
        "--choice",
        nargs="+",
        default=["balanced"],
        choices=["balanced", "queue"],
        help="How the k are chosen from the pool: half of each label at random (balanced), "
        "or the first k the review queue hands out (queue).",
    )
    parser.add_argument(
        "--boost-weight",
        nargs="+",
        type=float,
        default=[None],
        help="training.boost_weight of the retrain: how many average groups the feedback's "
        "groups weigh (default: the project's default).",
    )
    args = parser.parse_args()
    draws = range(args.first_draw, args.first_draw + args.draws)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="apd-new-source-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        default = Settings().training.boost_weight
        boosts = [default if boost is None else boost for boost in args.boost_weight]
        for source in args.source:
            for choice in args.choice:
                for boost in boosts:
                    rows += drill(source, args.k, draws, Workspace(folder, boost), choice)
    print_table(rows)
    for source in args.source:
        for choice in args.choice:
            for boost in boosts:
                mine = [
                    r
                    for r in rows
                    if (r["source"], r["choice"], r["boost_weight"]) == (source, choice, boost)
                ]
                ratio = statistics.mean(r["challenger_over_probe"] for r in mine)
                print(
                    f"{source}, {choice}, boost {boost:g}: challenger / probe ROC-AUC, "
                    f"mean {ratio:.3f} (target 0.95)"
                )
    append_csv("new_source", rows)


if __name__ == "__main__":
    main()
