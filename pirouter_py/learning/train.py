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
import random
import time
import zlib
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.config import Config
from pirouter_py.errors import ExitCode, PirouterError, install_hint
from pirouter_py.learning.data import GOOD, Example
from pirouter_py.ledger import labels as ledger_labels
from pirouter_py.routing import learned, policy

MIN_LABELS = ledger_labels.MIN_LABELS  # labels an alias needs before it is learned
MIN_EACH = ledger_labels.MIN_EACH  # ... of which at least this many good and this many not
# the prompts a model was trained on are kept as 32-bit fingerprints of their feature ids, so
# `eval` can tell a file of them from held-out prompts (4 bytes each; at most this many)
FINGERPRINTS_KEPT = 200_000
REGULARIZATION = 1.0  # scikit-learn's C: the inverse strength of the L2 penalty


class MissingExtra(PirouterError):
    exit_code = ExitCode.RUNTIME  # the environment lacks it: not a mistake in the command


def _sklearn() -> tuple[Any, Any]:
    try:
        from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    except ImportError:
        raise MissingExtra(f"training needs scikit-learn: {install_hint('learn')}") from None
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
    return not ledger_labels.shortfall(n, good)


shortfall = ledger_labels.shortfall  # what an alias lacks before it can be learned


# How much one label counts in training, by where it came from (ledger/labels.py). A person's
# word (feedback) and an answer check's verdict (the answer was empty, cut, malformed: not
# usable) are sure; a shadow check is a check or a judge's guess no one saw; a regenerate may be
# a wish for another wording as much as a bad answer, and an answer returned and not complained
# of may still have been a poor one: silence is the weakest word. A label without a source (a
# labelled file written by hand) counts as a person's.
SOURCE_WEIGHTS = {"feedback": 1.0, "check": 1.0, "shadow": 0.75, "regenerate": 0.5, "answered": 0.5}


def sample_weights(rows: Sequence[Example], alias: str) -> list[float]:
    """Each row's weight for `alias`'s model by its label's source, scaled to a mean of 1 (so
    REGULARIZATION keeps its strength against the data, whatever the mix of sources)."""
    weights = [SOURCE_WEIGHTS.get(ex.sources.get(alias, "feedback"), 1.0) for ex in rows]
    mean = sum(weights) / len(weights) if weights else 1.0
    return [w / mean for w in weights]


def fit(examples: Sequence[Example], alias: str) -> tuple[float, list[float]]:
    """Bias and dense weights of `alias`'s model, from the examples that label it, each weighed
    by its label's source (SOURCE_WEIGHTS)."""
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
    model.fit(x, y, sample_weight=sample_weights(rows, alias))
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


CALIBRATION_POINTS = 50  # thresholds kept in a model file's calibration
CALIBRATION_FOLDS = 5  # held-out folds its predictions come from


def held_out(
    examples: Sequence[Example], folds: int, wrap: Callable[[learned.Scorer], Any] | None = None
) -> tuple[list[dict[str, float] | None], list[int]]:
    """Each example's chances from a model trained on the other folds (a fixed shuffle), and
    each example's fold; None for the examples of a fold whose training part learns no alias.
    `wrap` makes the router the daemon would route with of each fold's model (prior.router:
    blended with the shipped prior), so the chances are the ones it would compare."""
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    fold_of = [0] * len(examples)
    for k, i in enumerate(order):
        fold_of[i] = k % folds
    out: list[dict[str, float] | None] = [None] * len(examples)
    for k in range(folds):
        model = scorer([examples[i] for i in order if fold_of[i] != k])
        if model.trained:
            routed = wrap(model) if wrap is not None else model
            for i in order:
                if fold_of[i] == k:
                    out[i] = routed.chances(examples[i].ids)
    return out, fold_of


def calibrate(
    config: Config, examples: Sequence[Example], chances: Sequence[Mapping[str, float] | None]
) -> list[dict[str, float]]:
    """How the learned router would route these examples at each threshold, from held-out
    `chances`: per quality_bias, the share sent to the strongest labelled model of the config
    and the quality kept (mean label of the model picked, where labelled) as a share of always
    the strongest's. The config's labelled chat models are the candidates (as a request that
    any of them can take); [] when fewer than two, or no example has chances."""
    models = {a: m for a, m in config.models.items() if m.enabled and m.kind == "chat"}
    known = sorted({a for ex in examples for a in ex.labels if a in models})
    if len(known) < 2:
        return []
    cheaper, strongest = policy.learned_order([(a, models[a]) for a in known])
    rows = [(ex, ch) for ex, ch in zip(examples, chances, strict=True) if ch]
    top = [ex.labels[strongest] for ex, _ in rows if strongest in ex.labels]
    if not rows or not top or not sum(top):
        return []
    best = sum(top) / len(top)
    values = sorted(
        1.0 - (ch.get(strongest, 1.0) - p) for _, ch in rows for a, p in ch.items() if a in cheaper
    )
    step = max(1, len(values) // CALIBRATION_POINTS)
    points = []
    for bias in sorted({*values[::step], *values[-1:], 1.0 + 1e-9}):
        picks = [(ex, policy.learned_pick(cheaper, strongest, ch, bias)) for ex, ch in rows]
        scored = [ex.labels[a] for ex, a in picks if a in ex.labels]
        strong = sum(a == strongest for _, a in picks) / len(picks)
        quality = sum(scored) / len(scored) if scored else 0.0
        spent = sum(models[a].cost for _, a in picks)
        points.append(
            {
                "quality_bias": bias,
                "strong_share": strong,
                "quality_share": quality / best,
                # at equal tokens: the price per million of the models picked, against always
                # the strongest's
                "cost_share": spent / (models[strongest].cost * len(picks))
                if models[strongest].cost
                else 1.0,
            }
        )
    return points


def write(path: Path, data: dict[str, Any]) -> None:
    """Write the model file atomically (a daemon watching it never reads half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(orjson.dumps(data))
    temp.chmod(0o600)
    temp.replace(path)
