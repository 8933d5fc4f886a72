"""The review queue: logged predictions waiting for a human verdict, handed out under leases.

Order of the queue (the policy): first answers the model gave as ``uncertain``, then primary
answers the shadow model disagreed with, then a random sample of confident answers for quality
control. Only primary predictions with no verdict yet are waiting. Within ``uncertain`` the
items whose score lies nearest the answering model's label threshold come first (``order:
least_certain``, among the newest RANK_WINDOW): on a source the model never saw, 40
verdicts chosen so teach a retrained head more than 40 taken at random (model card, "Which
photos to review first"); ``oldest`` keeps arrival order. Other kinds, and ties, go oldest
first. The sample is the predictions
whose random id falls under ``sample_rate`` (ids are uuid4 hex), so it is fixed per prediction
and needs no extra column.

Two reviewers never hold the same item: a claim is a row keyed by the prediction, taken by an
insert (the key refuses a second) or by an update that only matches an expired lease (the
database re-checks the condition under the row lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, delete, exists, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, defer

from ai_photo_detector.persistence.feedback import FeedbackResult, record_feedback
from ai_photo_detector.persistence.schema import Feedback, Prediction, ReviewClaim, ReviewSkip
from ai_photo_detector.persistence.store import Store, aware

KINDS = ("uncertain", "disagreement", "sample")
ORDERS = ("least_certain", "oldest")
SHADOW = aliased(Prediction)
# Where a model's threshold is not known (a model no longer loaded): the middle.
UNKNOWN_THRESHOLD = 0.5
# least_certain ranks the newest this many waiting items (an index gives them; a backlog of
# millions is never sorted by distance in full).
RANK_WINDOW = 10_000


class NotClaimed(LookupError):
    """The reviewer holds no live lease on this prediction (expired, or someone else's)."""


@dataclass(frozen=True)
class QueueFilter:
    model: str | None = None
    band: str | None = None
    reason: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class ReviewItem:
    prediction_id: str
    kind: str
    created_at: datetime
    model_name: str
    model_version: str
    label: str
    band: str
    score: float
    reasons: list[str]
    width: int
    height: int
    format: str
    image_path: str | None
    provenance: dict[str, Any] | None
    shadow: dict[str, Any] | None = None
    lease_expires_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


COUNT_LIMIT = 10_000


def sample_ceiling(rate: float) -> str:
    """The id below which a uuid4 hex id is in the sample: a share ``rate`` of all ids."""
    return format(min(int(rate * 16**8), 16**8 - 1), "08x")


def _disagreeing_shadow() -> Any:
    return exists().where(
        SHADOW.paired_id == Prediction.id,
        SHADOW.route == "shadow",
        SHADOW.own_label != Prediction.own_label,
    )


def _waiting(reviewer: str, now: datetime, filters: QueueFilter) -> Select[Any]:
    """Primary predictions with no verdict, not skipped by ``reviewer``, not leased to another
    (their embeddings, the bulk of a row, are not loaded: the queue never shows them)."""
    query = (
        select(Prediction)
        .options(defer(Prediction.embedding))
        .where(
            Prediction.route == "primary",
            ~exists().where(Feedback.prediction_id == Prediction.id),
            ~exists().where(
                ReviewSkip.prediction_id == Prediction.id, ReviewSkip.reviewer == reviewer
            ),
            ~exists().where(
                ReviewClaim.prediction_id == Prediction.id,
                ReviewClaim.expires_at > now,
                ReviewClaim.reviewer != reviewer,
            ),
        )
    )
    if filters.model:
        query = query.where(Prediction.model_name == filters.model)
    if filters.band:
        query = query.where(Prediction.band == filters.band)
    if filters.reason:
        query = query.where(
            or_(
                Prediction.reasons == filters.reason,
                Prediction.reasons.like(f"{filters.reason},%"),
                Prediction.reasons.like(f"%,{filters.reason}"),
                Prediction.reasons.like(f"%,{filters.reason},%"),
            )
        )
    if filters.since:
        query = query.where(Prediction.created_at >= filters.since)
    if filters.until:
        query = query.where(Prediction.created_at < filters.until)
    return query


def _of_kind(query: Select[Any], kind: str, sample_rate: float) -> Select[Any]:
    if kind == "uncertain":
        return query.where(Prediction.band == "uncertain")
    confident = query.where(Prediction.band != "uncertain")
    if kind == "disagreement":
        return confident.where(_disagreeing_shadow())
    return confident.where(
        ~_disagreeing_shadow(), Prediction.id < sample_ceiling(sample_rate)
    )  # the QC sample


def _kinds(filters: QueueFilter) -> Sequence[str]:
    return (filters.kind,) if filters.kind else KINDS


def _distance_to_threshold(thresholds: dict[tuple[str, str], float]) -> Any:
    """|score - the answering model's label threshold|, as an SQL expression."""
    known = [
        (and_(Prediction.model_name == name, Prediction.model_version == version), threshold)
        for (name, version), threshold in thresholds.items()
    ]
    centre = case(*known, else_=UNKNOWN_THRESHOLD) if known else literal(UNKNOWN_THRESHOLD)
    return func.abs(Prediction.score - centre)


class ReviewQueue:
    def __init__(
        self,
        store: Store,
        lease_s: float,
        sample_rate: float,
        order: str = "least_certain",
        thresholds: dict[tuple[str, str], float] | None = None,
    ) -> None:
        """``thresholds``: the label threshold of each loaded model by (name, version), which
        ``least_certain`` measures from."""
        if order not in ORDERS:
            raise ValueError(f"unknown queue order {order!r}")
        self.store = store
        self.lease = timedelta(seconds=lease_s)
        self.sample_rate = sample_rate
        self.order = order
        self.thresholds = thresholds or {}

    def _ordered(self, query: Select[Any], kind: str) -> Select[Any]:
        if kind != "uncertain" or self.order != "least_certain":
            return query.order_by(Prediction.created_at, Prediction.id)
        newest = (
            query.with_only_columns(Prediction.id)
            .order_by(Prediction.created_at.desc())
            .limit(RANK_WINDOW)
        )
        return query.where(Prediction.id.in_(newest)).order_by(
            _distance_to_threshold(self.thresholds), Prediction.created_at, Prediction.id
        )

    # --- reading -------------------------------------------------------------------------------

    def waiting(
        self, reviewer: str, filters: QueueFilter, limit: int
    ) -> tuple[list[ReviewItem], dict[str, int]]:
        """Items in policy order (see the module) and how many wait of each kind
        (at most COUNT_LIMIT: a count that reaches it means at least that many)."""
        now = datetime.now(UTC)
        items: list[ReviewItem] = []
        counts: dict[str, int] = {}
        base = _waiting(reviewer, now, filters)
        with self.store.session() as session:
            for kind in _kinds(filters):
                query = _of_kind(base, kind, self.sample_rate)
                # Counting stops at COUNT_LIMIT: a backlog of millions costs no full scan.
                counted = query.with_only_columns(Prediction.id).limit(COUNT_LIMIT).subquery()
                counts[kind] = session.scalar(select(func.count()).select_from(counted)) or 0
                if len(items) < limit:
                    rows = session.scalars(
                        self._ordered(query, kind).limit(limit - len(items))
                    ).all()
                    items += [self._item(session, row, kind) for row in rows]
        return items, counts

    def next_retrain(self, since: datetime) -> dict[str, int]:
        """What ``retrain`` would take from this store now: the reviewed predictions (verdicts
        since ``since``) whose upload was kept, and how many of them the model had answered
        ``uncertain``; ``without_image`` were reviewed but cannot be trained on."""
        reviewed = (
            select(Prediction.id, Prediction.band, Prediction.image_path)
            .join(Feedback, Feedback.prediction_id == Prediction.id)
            .where(Feedback.created_at >= since)
            .distinct()
            .subquery()
        )
        kept = reviewed.c.image_path.is_not(None)
        with self.store.session() as session:
            row = session.execute(
                select(
                    func.count().filter(kept),
                    func.count().filter(kept, reviewed.c.band == "uncertain"),
                    func.count().filter(~kept),
                ).select_from(reviewed)
            ).one()
        return {"photos": row[0], "from_uncertain": row[1], "without_image": row[2]}

    def item(self, prediction_id: str) -> ReviewItem | None:
        with self.store.session() as session:
            row = session.get(Prediction, prediction_id)
            return None if row is None else self._item(session, row, self._kind_of(session, row))

    # --- leases --------------------------------------------------------------------------------

    def claim(self, reviewer: str, filters: QueueFilter) -> ReviewItem | None:
        """Lease the first waiting item to ``reviewer`` (their own live lease first, whatever
        the filters, so a reload resumes); None when nothing waits."""
        now = datetime.now(UTC)
        base = _waiting(reviewer, now, filters)
        with self.store.session() as session:
            held = session.scalars(
                select(Prediction)
                .join(ReviewClaim, ReviewClaim.prediction_id == Prediction.id)
                .where(ReviewClaim.reviewer == reviewer, ReviewClaim.expires_at > now)
                .order_by(ReviewClaim.claimed_at)
                .limit(1)
            ).first()
            if held is not None:
                return self._leased(session, held, reviewer, now)
            for kind in _kinds(filters):
                query = self._ordered(_of_kind(base, kind, self.sample_rate), kind)
                # Others may take every candidate first: look again (in a fresh transaction)
                # while some wait; the bound only guards against a store that never settles.
                for _ in range(50):
                    candidates = session.scalars(query.limit(20)).all()
                    if not candidates:
                        break
                    for row in candidates:
                        if self._take(row.id, reviewer, now):
                            return self._leased(session, row, reviewer, now, kind)
                    session.rollback()
        return None

    def _take(self, prediction_id: str, reviewer: str, now: datetime) -> bool:
        if not self._lease(prediction_id, reviewer, now):
            return False  # another reviewer holds it
        # A verdict is stored before its lease is deleted, so a lease taken here after another
        # reviewer's verdict sees that verdict now: give such an item back.
        with self.store.session() as session:
            reviewed = session.scalar(
                select(func.count()).where(Feedback.prediction_id == prediction_id)
            )
        if reviewed:
            self.release(reviewer, prediction_id)
            return False
        return True

    def _lease(self, prediction_id: str, reviewer: str, now: datetime) -> bool:
        """Insert the lease, or take over an expired one; False when someone holds it."""
        expires = now + self.lease
        with self.store.session() as session, session.begin():
            taken = session.execute(
                update(ReviewClaim)
                .where(
                    ReviewClaim.prediction_id == prediction_id,
                    or_(ReviewClaim.expires_at <= now, ReviewClaim.reviewer == reviewer),
                )
                .values(reviewer=reviewer, claimed_at=now, expires_at=expires)
                .execution_options(synchronize_session=False)
            )
            if getattr(taken, "rowcount", 0) == 1:
                return True
        try:
            with self.store.session() as session, session.begin():
                session.add(
                    ReviewClaim(
                        prediction_id=prediction_id,
                        reviewer=reviewer,
                        claimed_at=now,
                        expires_at=expires,
                    )
                )
        except IntegrityError:
            return False
        return True

    def _leased(
        self,
        session: Session,
        row: Prediction,
        reviewer: str,
        now: datetime,
        kind: str | None = None,
    ) -> ReviewItem:
        item = self._item(session, row, kind or self._kind_of(session, row))
        expires = session.scalar(
            select(ReviewClaim.expires_at).where(
                ReviewClaim.prediction_id == row.id, ReviewClaim.reviewer == reviewer
            )
        )
        item.lease_expires_at = aware(expires) if expires is not None else None
        return item

    def release(self, reviewer: str, prediction_id: str) -> bool:
        with self.store.session() as session, session.begin():
            gone = session.execute(
                delete(ReviewClaim)
                .where(ReviewClaim.prediction_id == prediction_id, ReviewClaim.reviewer == reviewer)
                .execution_options(synchronize_session=False)
            )
            return getattr(gone, "rowcount", 0) == 1

    def verdict(
        self, reviewer: str, prediction_id: str, label: str, source: str
    ) -> FeedbackResult | None:
        """Store the verdict as feedback (``label`` ``skip``: the reviewer passes; None) and end
        the lease. Raises :class:`NotClaimed` without a live lease of ``reviewer``."""
        now = datetime.now(UTC)
        with self.store.session() as session:
            live = session.scalar(
                select(func.count()).where(
                    ReviewClaim.prediction_id == prediction_id,
                    ReviewClaim.reviewer == reviewer,
                    ReviewClaim.expires_at > now,
                )
            )
        if not live:
            raise NotClaimed(prediction_id)
        result = None
        if label == "skip":
            with self.store.session() as session, session.begin():
                session.merge(
                    ReviewSkip(prediction_id=prediction_id, reviewer=reviewer, created_at=now)
                )
        else:
            result = record_feedback(self.store, prediction_id, label, source)
        self.release(reviewer, prediction_id)
        return result

    # --- items -----------------------------------------------------------------------------------

    def _kind_of(self, session: Session, row: Prediction) -> str:
        if row.band == "uncertain":
            return "uncertain"
        disagrees = session.scalar(
            select(_disagreeing_shadow()).select_from(Prediction).where(Prediction.id == row.id)
        )
        return "disagreement" if disagrees else "sample"

    def _item(self, session: Session, row: Prediction, kind: str) -> ReviewItem:
        shadow = None
        if kind == "disagreement":
            other = session.scalars(
                select(SHADOW).where(SHADOW.paired_id == row.id, SHADOW.route == "shadow").limit(1)
            ).first()
            if other is not None:
                shadow = {
                    "model": {"name": other.model_name, "version": other.model_version},
                    "label": other.label,
                    "band": other.band,
                    "score": other.score,
                }
        return ReviewItem(
            prediction_id=row.id,
            kind=kind,
            created_at=aware(row.created_at),
            model_name=row.model_name,
            model_version=row.model_version,
            label=row.label,
            band=row.band,
            score=row.score,
            reasons=[r for r in row.reasons.split(",") if r],
            width=row.width,
            height=row.height,
            format=row.format,
            image_path=row.image_path,
            provenance=row.provenance,
            shadow=shadow,
        )
