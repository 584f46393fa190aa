"""Validation metrics, computed the same way for binary and multiclass tasks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from repro import names


def scores_from_logits(logits: torch.Tensor) -> np.ndarray:
    """Class probabilities: one column (P(class 1)) for a one-logit binary head, else a softmax."""
    if logits.ndim == 1 or logits.shape[1] == 1:
        return torch.sigmoid(logits.reshape(-1)).cpu().numpy()
    return torch.softmax(logits, dim=1).cpu().numpy()


def classification_metrics(targets: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and ROC AUC; macro-averaged when there are more than 2 classes.

    Args:
        targets: true class indices.
        scores: P(class 1) per sample for a binary head, or an (n, classes) probability matrix.

    Returns:
        The metrics; `auc` is NaN when the validation set holds a single class, where it is undefined.
    """
    binary = scores.ndim == 1
    predictions = (scores >= 0.5).astype(np.int64) if binary else scores.argmax(axis=1)
    average = "binary" if binary else "macro"
    metrics = {
        names.ACCURACY: float(accuracy_score(targets, predictions)),
        names.PRECISION: float(precision_score(targets, predictions, average=average, zero_division=0)),
        names.RECALL: float(recall_score(targets, predictions, average=average, zero_division=0)),
        names.F1: float(f1_score(targets, predictions, average=average, zero_division=0)),
    }
    metrics[names.AUC] = _roc_auc(targets, scores, binary)
    return metrics


def _roc_auc(targets: np.ndarray, scores: np.ndarray, binary: bool) -> float:
    # Undefined with one class, and for scores a diverged model made NaN (scikit-learn would raise).
    if len(np.unique(targets)) < 2 or not np.isfinite(scores).all():
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # a class absent from a tiny split only warns; the value is still defined
        if binary:
            return float(roc_auc_score(targets, scores))
        present = np.unique(targets)
        if len(present) < scores.shape[1]:
            # One-vs-rest AUC over the classes the validation set holds; renormalise their scores.
            sub = scores[:, present]
            sub = sub / sub.sum(axis=1, keepdims=True)
            remap = {cls: i for i, cls in enumerate(present)}
            return float(roc_auc_score([remap[t] for t in targets], sub, multi_class="ovr", average="macro"))
        return float(roc_auc_score(targets, scores, multi_class="ovr", average="macro"))
