"""'uncertain' with reasons: low margin between the bands, or a photo unlike the training data."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ai_photo_detector.model.bundle import load_bundle
from ai_photo_detector.model.familiarity import (
    MIN_REVIEWED,
    FamiliarityReference,
    fit_reference,
    reference_of,
    threshold_for,
)
from ai_photo_detector.model.inference import LOW_MARGIN, UNFAMILIAR, verdicts
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.settings import Settings
from conftest import SHIPPED_MODEL


def test_far_embeddings_are_unfamiliar_and_near_ones_are_not() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 24))
    held_out = rng.normal(size=(100, 24))
    reference = fit_reference(train, k=5, components=8)
    threshold = threshold_for(reference.distances(held_out), 0.99)
    assert (reference.distances(rng.normal(size=(200, 24))) > threshold).mean() < 0.05
    assert (reference.distances(rng.normal(6, 1, size=(50, 24))) > threshold).all()


def test_reviewed_photos_make_their_kind_familiar_and_nothing_else() -> None:
    """A new kind of photo far from training is unfamiliar; once some of it is reviewed, the
    rest of its kind counts as familiar, while another unseen kind stays unfamiliar."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 24))
    reference = fit_reference(train, k=5, components=8)
    threshold = threshold_for(reference.distances(rng.normal(size=(100, 24))), 0.95)
    new_kind = rng.normal(0, 1, size=(80, 24)) + np.r_[np.full(12, 5.0), np.zeros(12)]
    other_kind = rng.normal(0, 1, size=(50, 24)) + np.r_[np.zeros(12), np.full(12, 5.0)]
    assert (reference.ratios(new_kind, threshold) > 1).all()

    widened = reference.with_reviewed(new_kind[:30], 0.95)
    assert (widened.ratios(new_kind[30:], threshold) > 1).mean() < 0.2
    assert (widened.ratios(other_kind, threshold) > 1).all()
    assert (widened.ratios(train[:50], threshold) <= reference.ratios(train[:50], threshold)).all()
    # what the bundle stores gives the same answers
    again = FamiliarityReference.from_arrays(widened.arrays(), widened.k)
    assert np.array_equal(again.ratios(new_kind, threshold), widened.ratios(new_kind, threshold))
    # too few reviewed photos to tell their spread, or the setting off: nothing widens
    assert reference.with_reviewed(new_kind[: MIN_REVIEWED - 1], 0.95) is reference
    assert "reviewed" not in reference.arrays()
    config = Settings().abstention.model_copy(update={"widen_with_reviews": False})
    assert len(reference_of(train, config, new_kind[:30]).reviewed) == 0
    assert len(reference_of(train, Settings().abstention, new_kind[:30]).reviewed) == 30


def test_verdict_reasons(frozen_bundle: Path) -> None:
    manifest = load_bundle(frozen_bundle).manifest
    bands = manifest.calibration.bands
    temperature = manifest.calibration.temperature
    ai = manifest.ai_index

    def logits_for(p: float) -> np.ndarray:
        row = np.zeros(2)
        row[ai] = temperature * np.log(p / (1 - p))
        return row

    confident = min(0.999, (bands.ai_from + 1) / 2)
    rows = np.stack([logits_for(confident), logits_for(confident)])
    plain, strange = verdicts(rows, manifest, unfamiliar=[False, True])
    assert plain.band == "ai" and plain.reasons == ()
    assert strange.band == "uncertain" and strange.reasons == (UNFAMILIAR,)
    assert strange.label == plain.label  # the model's best guess is still given
    if bands.real_below < bands.ai_from:
        middle = (bands.real_below + bands.ai_from) / 2
        (between,) = verdicts(logits_for(middle)[None], manifest)
        assert between.band == "uncertain" and between.reasons == (LOW_MARGIN,)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    database = tmp_path_factory.mktemp("abstain") / "apd.db"
    settings = Settings(  # type: ignore[arg-type]
        model=str(SHIPPED_MODEL),
        database_url=f"sqlite:///{database}",
        prediction_log={"flush_interval_s": 0.05},
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _noise() -> bytes:
    """Nothing like a photograph: no model probability means anything here."""
    return _jpeg(np.random.default_rng(0).integers(0, 255, (320, 240, 3), dtype=np.uint8))


def _photo() -> bytes:
    from skimage import data

    return _jpeg(data.astronaut())


def test_unfamiliar_input_is_answered_uncertain_with_its_reason_and_logged(
    client: TestClient,
) -> None:
    from sqlalchemy import select

    from ai_photo_detector.persistence.schema import Prediction

    strange = client.post("/v1/predict", content=_noise()).json()
    assert strange["band"] == "uncertain" and "unfamiliar" in strange["reasons"]
    photo = client.post("/v1/predict", content=_photo()).json()
    assert "unfamiliar" not in photo["reasons"]
    assert (photo["band"] == "uncertain") == bool(photo["reasons"])
    explained = client.post("/v1/explain?overlay=false", content=_noise()).json()
    assert explained["reasons"] == strange["reasons"]
    services = client.app.state.services  # type: ignore[attr-defined]
    assert services.prediction_log.flush()
    with services.store.session() as session:
        rows = {
            row.id: row
            for row in session.scalars(
                select(Prediction).where(
                    Prediction.id.in_([strange["prediction_id"], photo["prediction_id"]])
                )
            )
        }
    assert rows[strange["prediction_id"]].reasons.split(",") == strange["reasons"]
    assert rows[photo["prediction_id"]].reasons == ",".join(photo["reasons"])


def test_cli_prints_the_reasons(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from ai_photo_detector.cli import app

    picture = tmp_path / "noise.jpg"
    picture.write_bytes(_noise())
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--model", str(SHIPPED_MODEL), "--json", str(picture)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["band"] == "uncertain" and "unfamiliar" in answer["reasons"]
    plain = runner.invoke(app, ["predict", "--model", str(SHIPPED_MODEL), str(picture)])
    assert "unfamiliar" in plain.output
