"""Training the learned router: one logistic regression per alias over hashed request features
(each row scaled to unit length), predicting whether that alias's answer is good enough (score
>= 0.5). The policy compares a cheaper model's chance with the strongest's.

scikit-learn (the optional `learn` extra) fits the models; the weights are written densely, as
routing/learned.py reads them, so the daemon never imports it. An alias is trained only with
MIN_LABELS labels, MIN_EACH of them good and MIN_EACH not: fewer, and `learn` says how many it
has and needs, and the policy keeps routing by the difficulty ladder.
"""

from __future__ import annotations

import base64
import math
import os
import time
import zlib
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.errors import ExitCode, PirouterError
from pirouter_py.learning.data import GOOD, Example
from pirouter_py.routing import learned

MIN_LABELS = 50  # labels an alias needs before it is learned
# the prompts a model was trained on are kept as 32-bit fingerprints of their feature ids, so
# `eval` can tell a file of them from held-out prompts (4 bytes each; at most this many)
FINGERPRINTS_KEPT = 200_000
MIN_EACH = 5  # ... of which at least this many good and this many not
REGULARIZATION = 1.0  # scikit-learn's C: the inverse strength of the L2 penalty


class MissingExtra(PirouterError):
    exit_code = ExitCode.USAGE


def _sklearn() -> tuple[Any, Any]:
    try:
        from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra(
            "training needs scikit-learn: pip install 'pirouter-py[learn]'"
        ) from None
    return LogisticRegression, csr_matrix


def counts(examples: Sequence[Example]) -> dict[str, tuple[int, int]]:
    """(labels, good) per alias."""
    out: dict[str, tuple[int, int]] = {}
    for ex in examples:
        for alias, score in ex.labels.items():
            n, good = out.get(alias, (0, 0))
            out[alias] = (n + 1, good + (score >= GOOD))
    return out


def trainable(n: int, good: int) -> bool:
    return n >= MIN_LABELS and good >= MIN_EACH and n - good >= MIN_EACH


def shortfall(n: int, good: int) -> str:
    """What an alias lacks before it can be learned."""
    wants = []
    if n < MIN_LABELS:
        wants.append(f"{MIN_LABELS - n} more labels")
    if good < MIN_EACH:
        wants.append(f"{MIN_EACH - good} more good answers")
    if n - good < MIN_EACH:
        wants.append(f"{MIN_EACH - (n - good)} more escalated or bad answers")
    return ", ".join(wants)


def fit(examples: Sequence[Example], alias: str) -> tuple[float, list[float]]:
    """Bias and dense weights of `alias`'s model, from the examples that label it."""
    regression, csr = _sklearn()
    rows = [ex for ex in examples if alias in ex.labels]
    indptr, indices, values = [0], [], []
    for ex in rows:
        indices += ex.ids
        values += [1 / math.sqrt(len(ex.ids))] * len(ex.ids)
        indptr.append(len(indices))
    x = csr((values, indices, indptr), shape=(len(rows), learned.BUCKETS))
    y = [int(ex.labels[alias] >= GOOD) for ex in rows]
    model = regression(C=REGULARIZATION, solver="liblinear", max_iter=200)
    model.fit(x, y)
    return float(model.intercept_[0]), model.coef_[0].tolist()


def _fitted(examples: Sequence[Example]) -> list[tuple[str, int, int, float, list[float] | None]]:
    """(alias, labels, good, bias, weights) per labelled alias; weights None for an alias with
    too few labels to learn (it keeps its rate)."""
    out: list[tuple[str, int, int, float, list[float] | None]] = []
    for alias, (n, good) in sorted(counts(examples).items()):
        if trainable(n, good):
            bias, weights = fit(examples, alias)
            out.append((alias, n, good, bias, weights))
        else:
            out.append((alias, n, good, 0.0, None))
    return out


def train(examples: Sequence[Example]) -> dict[str, Any]:
    """The learned router's file contents."""
    models = {
        alias: {
            "bias": bias,
            "weights": None if weights is None else learned.pack(weights),
            "labels": n,
            "good": good,
        }
        for alias, n, good, bias, weights in _fitted(examples)
    }
    prints = sorted({fingerprint(ex.ids) for ex in examples[:FINGERPRINTS_KEPT]})
    return {
        "version": learned.VERSION,
        "buckets": learned.BUCKETS,
        "trained_at": time.time(),
        "labels": len(examples),
        "models": models,
        "trained_on": base64.b64encode(b"".join(f.to_bytes(4, "little") for f in prints)).decode(),
    }


def fingerprint(ids: Sequence[int]) -> int:
    """A prompt's fingerprint: the CRC-32 of its feature ids (the same prompt, the same ids)."""
    return zlib.crc32(b"".join(i.to_bytes(3, "little") for i in ids))


def trained_on(path: Path) -> frozenset[int]:
    """The fingerprints of the prompts the model at `path` was trained on (none: an older
    model, or no model)."""
    try:
        blob = orjson.loads(path.read_bytes()).get("trained_on") or ""
        raw = base64.b64decode(blob)
    except (OSError, ValueError, AttributeError):
        return frozenset()
    return frozenset(int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4))


def scorer(examples: Sequence[Example]) -> learned.Scorer:
    """A scorer trained in memory (eval's cross-validation)."""
    models = {
        alias: learned.AliasModel(bias, None if weights is None else array("f", weights), n, good)
        for alias, n, good, bias, weights in _fitted(examples)
    }
    return learned.Scorer(models, time.time(), len(examples))


def write(path: Path, data: dict[str, Any]) -> None:
    """Write the model file atomically (a daemon watching it never reads half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(orjson.dumps(data))
    temp.chmod(0o600)
    temp.replace(path)
