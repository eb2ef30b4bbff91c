"""Seeded, stratified index splits: which samples go to train, validation and test.

Everything here works on label arrays and returns index arrays; loaders turn indices into
datasets. A split depends only on the labels and ``split_seed``, never on the training seed
or on global random state, so the same recipe always tests on the same samples.

Held-out counts are shared out between classes by largest remainders rather than rounded per
class, so the totals match the fractions exactly and tiny classes (even of one sample) work.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from distil.errors import DataError

# Streams of the split seed: the train/val/test split and the train_limit pick are drawn
# independently, so changing train_limit never moves samples between val and test.
_SPLIT_STREAM = 0
_LIMIT_STREAM = 1


class SplitIndices(NamedTuple):
    """Sorted, disjoint sample indices of the three splits."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def apportion(total: int, capacities: np.ndarray) -> np.ndarray:
    """Share ``total`` items between groups in proportion to ``capacities`` (largest remainders).

    The result sums to ``total`` and never exceeds a group's capacity, provided ``total`` is
    at most ``capacities.sum()``. Ties go to the earlier group, so the result is deterministic.
    """
    capacities = np.asarray(capacities, dtype=np.int64)
    if total <= 0 or capacities.sum() == 0:
        return np.zeros_like(capacities)
    exact = total * capacities / capacities.sum()
    quotas = np.floor(exact).astype(np.int64)
    remainders = exact - quotas
    # Sum of remainders equals the shortfall, so only groups with a positive remainder (whose
    # exact share is below capacity) can receive the extra item.
    shortfall = total - int(quotas.sum())
    quotas[np.argsort(-remainders, kind="stable")[:shortfall]] += 1
    return quotas


def _class_members(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """For each class present (ascending), its sample indices in a seeded random order."""
    return [rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)]


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> SplitIndices:
    """Split samples into train/val/test with each class's share kept in every split.

    ``labels`` is ``(N,)`` integer class ids. About ``val_fraction * N`` samples go to
    validation and ``test_fraction * N`` to test; the rest train. The result is the same for
    the same labels and ``seed``, and the three index arrays are disjoint and cover ``0..N-1``.
    Raises ``DataError`` when too few samples are left for training.
    """
    labels = np.asarray(labels)
    num_samples = len(labels)
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    members = _class_members(labels, rng)
    class_sizes = np.array([len(m) for m in members], dtype=np.int64)

    test_total = round(test_fraction * num_samples)
    val_total = min(round(val_fraction * num_samples), num_samples - test_total)
    test_quotas = apportion(test_total, class_sizes)
    val_quotas = apportion(val_total, class_sizes - test_quotas)

    train, val, test = [], [], []
    for indices, n_test, n_val in zip(members, test_quotas, val_quotas, strict=True):
        test.append(indices[:n_test])
        val.append(indices[n_test : n_test + n_val])
        train.append(indices[n_test + n_val :])
    splits = SplitIndices(*(_sorted_concat(parts) for parts in (train, val, test)))
    if len(splits.train) == 0:
        raise DataError(
            f"{num_samples} samples are too few to hold out val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} and still train on any"
        )
    return splits


def limit_train(
    train_indices: np.ndarray, labels: np.ndarray, limit: int | None, seed: int
) -> np.ndarray:
    """Keep ``limit`` of ``train_indices``, stratified by class, chosen by ``seed``; sorted.

    ``labels`` is indexed by the original sample ids in ``train_indices``. ``None`` or a limit
    at least as large as the training set keeps every sample.
    """
    train_indices = np.asarray(train_indices, dtype=np.int64)
    if limit is None or limit >= len(train_indices):
        return train_indices
    rng = np.random.default_rng([seed, _LIMIT_STREAM])
    members = _class_members(np.asarray(labels)[train_indices], rng)
    quotas = apportion(limit, np.array([len(m) for m in members], dtype=np.int64))
    kept = [
        train_indices[positions[:quota]] for positions, quota in zip(members, quotas, strict=True)
    ]
    return _sorted_concat(kept)


def _sorted_concat(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)
