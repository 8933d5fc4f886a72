"""The review queue: policy order, filters, leases that two reviewers never share, verdicts
stored as feedback, and the /v1/review API with its scope (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from ai_photo_detector.persistence import review
from ai_photo_detector.persistence.predictions import PREDICTIONS, PredictionRecord
from ai_photo_detector.persistence.review import NotClaimed, QueueFilter, ReviewQueue
from ai_photo_detector.persistence.schema import Feedback, ReviewClaim
from ai_photo_detector.persistence.store import Store
from ai_photo_detector.serving.api.app import create_app
from ai_photo_detector.serving.keyring import hash_key
from ai_photo_detector.settings import Settings
from test_store import record

REVIEW_KEY = "apd_review_key_for_tests_0123456789"
PREDICT_KEY = "apd_predict_key_for_tests_0123456789"
KEYS = [
    {"id": "alice", "sha256": hash_key(REVIEW_KEY), "scopes": ["review"]},
    {"id": "bob", "sha256": hash_key(REVIEW_KEY + "b"), "scopes": ["review"]},
    {"id": "shop", "sha256": hash_key(PREDICT_KEY), "scopes": ["predict"]},
]


def logged(
    i: int, band: str, label: str = "ai", reasons: str = "", **changes: object
) -> PredictionRecord:
    row = replace(record(i, label=label), band=band, reasons=reasons)
    row.created_at = datetime.now(UTC) - timedelta(minutes=100 - i)  # i orders them in time
    return replace(row, **changes)  # type: ignore[arg-type]


def write(store: Store, *rows: PredictionRecord) -> None:
    with store.begin() as connection:
        for row in rows:
            values = dict(vars(row))
            values.pop("image_data"), values.pop("spool_seq")
            connection.execute(insert(PREDICTIONS), [values])


@pytest.fixture
def queue_store(database_url: str) -> Store:
    store = Store(database_url)
    uncertain_old = logged(1, "uncertain", reasons="low_margin")
    uncertain_new = logged(2, "uncertain", reasons="low_margin,unfamiliar")
    disputed = logged(3, "ai", label="ai")
    shadow = logged(4, "real", label="real", route="shadow", paired_id=disputed.id)
    agreed = logged(5, "real", label="real")
    agreed_shadow = logged(6, "real", label="real", route="shadow", paired_id=agreed.id)
    reviewed = logged(7, "uncertain")
    other_model = logged(8, "uncertain", model_name="other")
    write(store, uncertain_old, uncertain_new, disputed, shadow, agreed, agreed_shadow)
    write(store, reviewed, other_model)
    with store.session() as session, session.begin():
        session.add(
            Feedback(
                prediction_id=reviewed.id, label="ai", source="api", created_at=datetime.now(UTC)
            )
        )
    store.ids = {  # type: ignore[attr-defined]
        "uncertain_old": uncertain_old.id,
        "uncertain_new": uncertain_new.id,
        "disputed": disputed.id,
        "agreed": agreed.id,
        "other_model": other_model.id,
    }
    return store


def test_policy_order_filters_and_counts(queue_store: Store) -> None:
    ids = queue_store.ids  # type: ignore[attr-defined]
    queue = ReviewQueue(queue_store, lease_s=60, sample_rate=1.0)
    items, counts = queue.waiting("alice", QueueFilter(model="detector"), limit=10)
    assert [i.prediction_id for i in items] == [
        ids["uncertain_old"],  # uncertain first, oldest first
        ids["uncertain_new"],
        ids["disputed"],  # then what the shadow model disagreed with
        ids["agreed"],  # then the QC sample of confident answers
    ]
    assert [i.kind for i in items] == ["uncertain", "uncertain", "disagreement", "sample"]
    assert counts == {"uncertain": 2, "disagreement": 1, "sample": 1}
    assert items[1].reasons == ["low_margin", "unfamiliar"]
    assert items[2].shadow is not None and items[2].shadow["label"] == "real"
    # One item looked up alone is given the same kind.
    for found in items:
        alone = queue.item(found.prediction_id)
        assert alone is not None and alone.kind == found.kind

    only = queue.waiting("alice", QueueFilter(reason="unfamiliar"), limit=10)[0]
    assert [i.prediction_id for i in only] == [ids["uncertain_new"]]
    other = queue.waiting("alice", QueueFilter(model="other"), limit=10)[0]
    assert [i.prediction_id for i in other] == [ids["other_model"]]
    later = datetime.now(UTC) - timedelta(minutes=97, seconds=30)
    recent = queue.waiting("alice", QueueFilter(since=later), 10)[0]
    assert [i.prediction_id for i in recent] == [ids["other_model"], ids["disputed"], ids["agreed"]]
    # Without a sample share, confident answers nobody disputed do not wait.
    none = ReviewQueue(queue_store, lease_s=60, sample_rate=0.0)
    assert none.waiting("alice", QueueFilter(model="detector"), 10)[1]["sample"] == 0


def test_least_certain_uncertain_items_come_first(database_url: str) -> None:
    """Nearest the answering model's own threshold first (0.5 for a model not loaded); only
    the uncertain kind is reordered, and ``oldest`` keeps arrival order."""
    store = Store(database_url)
    far = logged(1, "uncertain", score=0.97)  # 0.17 from its model's threshold (0.8)
    near = logged(2, "uncertain", score=0.78)  # 0.02
    below = logged(3, "uncertain", score=0.62)  # 0.18
    other = logged(4, "uncertain", score=0.55, model_name="old")  # 0.05 from 0.5: unknown model
    confident = logged(5, "ai", score=0.99)  # the QC sample keeps its place after them
    write(store, far, near, below, other, confident)
    thresholds = {("detector", "1"): 0.8}
    queue = ReviewQueue(store, 60, 1.0, "least_certain", thresholds)
    items = queue.waiting("alice", QueueFilter(), 10)[0]
    assert [i.prediction_id for i in items] == [near.id, other.id, far.id, below.id, confident.id]
    claimed = queue.claim("alice", QueueFilter())
    assert claimed is not None and claimed.prediction_id == near.id
    arrival = ReviewQueue(store, 60, 1.0, "oldest", thresholds).waiting("bob", QueueFilter(), 10)
    assert [i.prediction_id for i in arrival[0]] == [far.id, below.id, other.id, confident.id]
    with pytest.raises(ValueError, match="unknown queue order"):
        ReviewQueue(store, 60, 1.0, "newest")


def test_least_certain_ranks_only_the_newest_window(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backlog is not sorted by distance in full: the newest RANK_WINDOW items are ranked."""
    monkeypatch.setattr(review, "RANK_WINDOW", 2)
    store = Store(database_url)
    oldest = logged(1, "uncertain", score=0.8)  # on the threshold, but outside the window
    far = logged(2, "uncertain", score=0.99)
    near = logged(3, "uncertain", score=0.7)
    write(store, oldest, far, near)
    queue = ReviewQueue(store, 60, 0.0, "least_certain", {("detector", "1"): 0.8})
    items, counts = queue.waiting("alice", QueueFilter(), 10)
    assert [i.prediction_id for i in items] == [near.id, far.id]
    assert counts["uncertain"] == 3  # counting is not windowed


def test_next_retrain_counts_reviewed_photos_whose_upload_was_kept(database_url: str) -> None:
    store = Store(database_url)
    kept = logged(1, "uncertain", image_path="/images/1.jpg")
    confident = logged(2, "ai", image_path="/images/2.jpg")
    unkept = logged(3, "uncertain")
    waiting = logged(4, "uncertain", image_path="/images/4.jpg")  # no verdict yet
    write(store, kept, confident, unkept, waiting)
    now = datetime.now(UTC)
    with store.session() as session, session.begin():
        given = [(kept, "api"), (kept, "review:alice"), (confident, "api"), (unkept, "api")]
        for row, source in given:
            session.add(Feedback(prediction_id=row.id, label="ai", source=source, created_at=now))
    queue = ReviewQueue(store, 60, 0.0)
    ready = queue.next_retrain(now - timedelta(days=1))
    # A photo reviewed twice counts once, as retrain keeps its latest verdict.
    assert ready == {"photos": 2, "from_uncertain": 1, "without_image": 1}
    assert queue.next_retrain(now + timedelta(seconds=1))["photos"] == 0  # outside the window


def test_counting_stops_at_the_limit(queue_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(review, "COUNT_LIMIT", 1)
    queue = ReviewQueue(queue_store, lease_s=60, sample_rate=1.0)
    items, counts = queue.waiting("alice", QueueFilter(model="detector"), limit=10)
    assert counts == {"uncertain": 1, "disagreement": 1, "sample": 1}
    assert len(items) == 4  # the items themselves are not cut by the count limit


def test_a_claimed_item_is_nobody_elses_until_its_lease_ends(queue_store: Store) -> None:
    ids = queue_store.ids  # type: ignore[attr-defined]
    queue = ReviewQueue(queue_store, lease_s=60, sample_rate=1.0)
    first = queue.claim("alice", QueueFilter(model="detector"))
    assert first is not None and first.prediction_id == ids["uncertain_old"]
    assert first.lease_expires_at is not None
    again = queue.claim("alice", QueueFilter(model="detector"))  # a reload resumes
    assert again is not None and again.prediction_id == first.prediction_id
    second = queue.claim("bob", QueueFilter(model="detector"))
    assert second is not None and second.prediction_id == ids["uncertain_new"]
    listed = [i.prediction_id for i in queue.waiting("bob", QueueFilter(), 10)[0]]
    assert first.prediction_id not in listed  # leased to alice: not in bob's view
    with pytest.raises(NotClaimed):
        queue.verdict("bob", first.prediction_id, "ai", "review:bob")

    held = queue.claim("carol", QueueFilter(model="detector", kind="sample"))
    assert held is not None and held.prediction_id == ids["agreed"]
    assert queue.claim("dave", QueueFilter(model="detector", kind="sample")) is None
    # Carol's lease runs out (moved into the past rather than waited for, so a slow machine
    # cannot let it lapse early): the item goes to the next reviewer.
    with queue_store.session() as session, session.begin():
        session.execute(
            update(ReviewClaim)
            .where(ReviewClaim.prediction_id == ids["agreed"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    taken = queue.claim("dave", QueueFilter(model="detector", kind="sample"))
    assert taken is not None and taken.prediction_id == ids["agreed"]
    with pytest.raises(NotClaimed):
        queue.verdict("carol", ids["agreed"], "real", "review:carol")


def test_verdicts_become_feedback_and_skips_are_per_reviewer(queue_store: Store) -> None:
    ids = queue_store.ids  # type: ignore[attr-defined]
    queue = ReviewQueue(queue_store, lease_s=60, sample_rate=1.0)
    item = queue.claim("alice", QueueFilter(model="detector"))
    assert item is not None
    result = queue.verdict("alice", item.prediction_id, "real", "review:alice")
    assert result is not None and result.predicted_label == "ai" and result.created
    with queue_store.session() as session:
        stored = session.scalars(
            select(Feedback).where(Feedback.prediction_id == item.prediction_id)
        )
        assert [(f.label, f.source) for f in stored] == [("real", "review:alice")]
    remaining = [i.prediction_id for i in queue.waiting("bob", QueueFilter(), 10)[0]]
    assert item.prediction_id not in remaining  # reviewed: out of everyone's queue

    skipped = queue.claim("alice", QueueFilter(model="detector"))
    assert skipped is not None and skipped.prediction_id == ids["uncertain_new"]
    assert queue.verdict("alice", skipped.prediction_id, "skip", "review:alice") is None
    nxt = queue.claim("alice", QueueFilter(model="detector"))
    assert nxt is not None and nxt.prediction_id == ids["disputed"]
    bobs = queue.claim("bob", QueueFilter(model="detector"))
    assert bobs is not None and bobs.prediction_id == ids["uncertain_new"]  # still bob's to do


def test_many_reviewers_claiming_at_once_never_share_an_item(database_url: str) -> None:
    store = Store(database_url)
    write(store, *[logged(i, "uncertain") for i in range(30)])
    queue = ReviewQueue(store, lease_s=60, sample_rate=0.0)
    claimed: dict[str, list[str]] = {}
    barrier = threading.Barrier(6)

    def reviewer(name: str) -> None:
        barrier.wait()
        mine = claimed.setdefault(name, [])
        for _ in range(5):
            item = queue.claim(name, QueueFilter())
            assert item is not None
            mine.append(item.prediction_id)
            queue.verdict(name, item.prediction_id, "ai", f"review:{name}")

    threads = [threading.Thread(target=reviewer, args=(f"r{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [pid for items in claimed.values() for pid in items]
    assert len(every) == 30 and len(set(every)) == 30
    assert queue.claim("late", QueueFilter()) is None
    store.close()


# --- the API ------------------------------------------------------------------------------------


def test_review_api_end_to_end(bundle_dir: Path, tmp_path: Path, tiny_dataset: Path) -> None:
    settings = Settings(
        model=str(bundle_dir),
        environment="production",
        auth={"keys": KEYS},  # type: ignore[arg-type]
        database_url=f"sqlite:///{tmp_path / 'review.db'}",
        prediction_log={"store_images": True, "image_dir": str(tmp_path / "images")},  # type: ignore[arg-type]
        review={"sample_rate": 1.0},  # type: ignore[arg-type]
    )
    photos = sorted((tiny_dataset / "real").iterdir())[:3]
    alice, bob = {"X-API-Key": REVIEW_KEY}, {"X-API-Key": REVIEW_KEY + "b"}
    with TestClient(create_app(settings)) as client:
        shop = {"X-API-Key": PREDICT_KEY}
        answers = [
            client.post("/v1/predict", content=p.read_bytes(), headers=shop).json() for p in photos
        ]
        client.app.state.services.prediction_log.flush(10)  # type: ignore[attr-defined]

        assert client.get("/v1/review/queue", headers=shop).status_code == 403
        assert client.get("/v1/review/queue").status_code == 401
        listed = client.get("/v1/review/queue", headers=alice)
        assert listed.status_code == 200, listed.text
        body = listed.json()
        assert {i["prediction_id"] for i in body["items"]} == {a["prediction_id"] for a in answers}
        assert sum(body["counts"].values()) == 3
        assert body["next_retrain"] == {  # nothing reviewed yet
            "photos": 0,
            "from_uncertain": 0,
            "without_image": 0,
            "window_days": settings.retraining.feedback_days,
        }

        first = client.post("/v1/review/claim", json={}, headers=alice).json()["item"]
        second = client.post("/v1/review/claim", json={}, headers=bob).json()["item"]
        assert first["prediction_id"] != second["prediction_id"]
        image = client.get(first["image_url"], headers=alice)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content in [p.read_bytes() for p in photos]

        evidence = client.get(
            f"/v1/review/items/{first['prediction_id']}/explanation", headers=alice
        )
        assert evidence.status_code == 200, evidence.text
        shown = evidence.json()
        assert shown["overlay_jpeg"] and len(shown["grid"]) > 0
        assert (
            abs(sum(map(sum, shown["grid"])) / sum(map(len, shown["grid"])) - shown["margin"])
            < 1e-3
        )
        client.app.state.services.prediction_log.flush(10)  # type: ignore[attr-defined]
        assert sum(client.get("/v1/review/queue", headers=bob).json()["counts"].values()) == 2

        stolen = client.post(
            f"/v1/review/items/{first['prediction_id']}/verdict", json={"label": "ai"}, headers=bob
        )
        assert stolen.status_code == 409 and stolen.json()["error"]["code"] == "not_claimed"
        bad = client.post(
            f"/v1/review/items/{first['prediction_id']}/verdict",
            json={"label": "cat"},
            headers=alice,
        )
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_label"
        done = client.post(
            f"/v1/review/items/{first['prediction_id']}/verdict",
            json={"label": "real"},
            headers=alice,
        )
        assert done.status_code == 200 and done.json()["recorded"] is True

        released = client.post(f"/v1/review/items/{second['prediction_id']}/release", headers=bob)
        assert released.status_code == 204
        again = client.post(f"/v1/review/items/{second['prediction_id']}/release", headers=bob)
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_claimed"
        left = client.get("/v1/review/queue", headers=bob).json()
        assert sum(left["counts"].values()) == 2  # one reviewed; the released one waits again
        # The verdict's photo was kept: the next retrain learns from it.
        assert left["next_retrain"]["photos"] == 1 and left["next_retrain"]["without_image"] == 0

        for stored in (tmp_path / "images").glob("*/*"):
            stored.unlink()  # as the retention clean-up does: the image is no longer offered
        gone = client.get(first["image_url"], headers=alice)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_retained"
        unexplained = client.get(
            f"/v1/review/items/{second['prediction_id']}/explanation", headers=alice
        )
        assert unexplained.status_code == 404
        item = client.get(f"/v1/review/items/{second['prediction_id']}", headers=alice).json()
        assert item["image_url"] is None
        missing = client.get("/v1/review/items/nope", headers=alice)
        assert missing.status_code == 404
