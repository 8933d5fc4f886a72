"""Is this photo of the kind a team reviewed? Where it is, the 'ai' band starts lower.

The 'ai' band is one bound for every photo, set so that the strictest training source keeps
``calibration.ai_band_fpr`` of its real photos out: after a retrain on reviewed feedback it
catches 20-35 % of the new source's AI photos. A looser bound for all photos would catch more,
but lets in up to 16 % of an unseen photoreal source's real photos. Kept to the photos of the
reviewed kind, where a team taught the model, the looser bound costs little elsewhere (model
card, "A classifier tells the reviewed kind apart").

The kind is told by a logistic regression of the reviewed photos' embeddings against the rest
of the training data (standardised, class-balanced, strongly regularised): a photo is of the
kind when it scores at least what ``quantile`` of the reviewed photos reach when each is left
out of the fit (5 folds). The neighbourhood of the familiarity rule does not serve here: 40
reviewed photos in 768 dimensions have a neighbourhood that holds most of an unseen source's
real photos. Fitted with scikit-learn at training; serving is a dot product (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Fewer reviewed photos than this cannot tell their kind from the rest, nor be split 5 ways.
MIN_REVIEWED = 10
FOLDS = 5


@dataclass(frozen=True)
class ReviewedKind:
    mean: NDArray[np.float32]  # (D,) of the embeddings the classifier was fitted on
    scale: NDArray[np.float32]  # (D,) their standard deviation
    weights: NDArray[np.float32]  # (D,) on standardised embeddings
    bias: float
    bound: float  # a score at or above it: of the kind
    reviewed: int  # reviewed photos fitted on
    quantile: float  # share of them (left out) at or above the bound

    def scores(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        standard = (np.atleast_2d(np.asarray(embeddings, np.float32)) - self.mean) / self.scale
        return np.asarray(standard @ self.weights + np.float32(self.bias), np.float32)

    def flags(self, embeddings: NDArray[np.floating]) -> NDArray[np.bool_]:
        result: NDArray[np.bool_] = self.scores(embeddings) >= self.bound
        return result

    def arrays(self) -> dict[str, NDArray[np.float32]]:
        return {
            "mean": self.mean,
            "scale": self.scale,
            "weights": self.weights,
            "bias": np.asarray([self.bias], np.float32),
            "bound": np.asarray([self.bound], np.float32),
            "reviewed": np.asarray([self.reviewed], np.float32),
            "quantile": np.asarray([self.quantile], np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[np.float32]]) -> ReviewedKind:
        return cls(
            arrays["mean"],
            arrays["scale"],
            arrays["weights"],
            float(arrays["bias"][0]),
            float(arrays["bound"][0]),
            int(arrays["reviewed"][0]),
            float(arrays["quantile"][0]),
        )


def fit_reviewed_kind(
    others: NDArray[np.floating],
    reviewed: NDArray[np.floating],
    quantile: float,
    regularisation: float = 0.01,
    seed: int = 0,
) -> ReviewedKind | None:
    """The kind of the ``reviewed`` embeddings against ``others`` (the rest of the training
    data); None with fewer than MIN_REVIEWED reviewed photos."""
    if len(reviewed) < MIN_REVIEWED or len(others) < MIN_REVIEWED:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([np.asarray(others, np.float32), np.asarray(reviewed, np.float32)])
    y = np.concatenate([np.zeros(len(others), np.int64), np.ones(len(reviewed), np.int64)])
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularisation, class_weight="balanced", max_iter=2000),
    )
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    left_out = cross_val_predict(model, x, y, cv=folds, method="decision_function")
    bound = float(np.quantile(left_out[y == 1].astype(np.float64), 1 - quantile))
    model.fit(x, y)
    scaler, logistic = model[0], model[1]
    return ReviewedKind(
        mean=np.asarray(scaler.mean_, np.float32),
        scale=np.asarray(scaler.scale_, np.float32),
        weights=np.asarray(logistic.coef_[0], np.float32),
        bias=float(logistic.intercept_[0]),
        bound=bound,
        reviewed=len(reviewed),
        quantile=quantile,
    )
