"""`python -m bench.prior.build`: the learned router's day-one prior, trained with pirouter's own
code (`learning.data.example`, `learning.train`) on the public training sets that
`bench.prior.sets` wrote, never on a held-out one.

Two forms are compared by leave-one-set-out (train on all training sets but one, route that
one): "weak" (P(weak good | prompt) learned, the strong model keeps its rate) and "both"
(P(strong good | prompt) learned too), each at several regularisation strengths C. The form
and C with the best mean APGR over the left-out sets are kept, trained on every training set,
and written to pirouter_py/routing/prior_data/prior.json.gz with a calibration curve
(quality_bias -> strong share, quality share) from the pooled leave-one-set-out predictions,
next to a manifest of the training prompts' hashes and bench/prior/heldout.sha256.gz of the
held-out ones.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.prior.sets import OUT, SETS, digest
from pirouter_py.config import Config, parse_config
from pirouter_py.learning import data, evaluate, train
from pirouter_py.learning.data import Example
from pirouter_py.routing import learned, policy

ROOT = Path(__file__).resolve().parents[2]
PRIOR_DIR = ROOT / "pirouter_py" / "routing" / "prior_data"
HELDOUT = ROOT / "bench" / "prior" / "heldout.sha256.gz"
TRAINING = [n for n, (_, _, role) in SETS.items() if role == "train"]
EXTRA = [n for n, (_, _, role) in SETS.items() if role == "extra"]
HELDOUT_SETS = [n for n, (_, _, role) in SETS.items() if role == "heldout"]
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)
FORMS = ("weak", "both")
CALIBRATION_POINTS = 50
TOKENS = (1000, 256)  # the same tokens for every prompt and model: cost share = strong share
CONFIG = """
[providers.prior]
type = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k"
[models.weak]
provider = "prior"
model_id = "weak"
quality = "basic"
input_per_m = 0.2
output_per_m = 0.6
[models.strong]
provider = "prior"
model_id = "strong"
quality = "premium"
input_per_m = 10.0
output_per_m = 30.0
[routing]
learned = true
"""


@dataclass(slots=True)
class Prompt:
    set: str
    prompt: str
    example: Example


def config() -> Config:
    return parse_config(CONFIG, "prior.toml")[0]


def load(name: str, out: Path = OUT) -> list[Prompt]:
    rows = []
    for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").split("\n"):
        if not line:
            continue
        row = json.loads(line)
        ex = data.example(
            {"prompt": row["prompt"], "labels": {"weak": row["weak"], "strong": row["strong"]}}
        )
        ex.tokens = {"weak": TOKENS, "strong": TOKENS}
        rows.append(Prompt(name, row["prompt"], ex))
    return rows


def scorer(examples: Sequence[Example], form: str, c: float) -> learned.Scorer:
    """A scorer trained in memory: both aliases learned, or the weak one and the strong rate."""
    train.REGULARIZATION = c
    if form == "both":
        return train.scorer(examples)
    weak_only = [Example({"weak": ex.labels["weak"]}, ex.ids) for ex in examples]
    found = train.scorer(weak_only)
    n, good = train.counts(examples)["strong"]
    models = {**found.models, "strong": learned.AliasModel(0.0, None, n, good)}
    return learned.Scorer(models, found.trained_at, found.labels)


def model_file(examples: Sequence[Example], form: str, c: float) -> dict[str, Any]:
    """The learned.json contents for the prior (without `trained_on`)."""
    train.REGULARIZATION = c
    if form == "both":
        found = train.train(examples)
    else:
        found = train.train([Example({"weak": ex.labels["weak"]}, ex.ids) for ex in examples])
        n, good = train.counts(examples)["strong"]
        found["models"]["strong"] = {"bias": 0.0, "weights": None, "labels": n, "good": good}
        found["labels"] = len(examples)
    found.pop("trained_on", None)
    return found


def apgr(
    cfg: Config, examples: Sequence[Example], chances: Sequence[dict[str, float]]
) -> dict[str, Any]:
    return evaluate.evaluate(cfg, examples, lambda i, _ex: chances[i])


def loso(sets: dict[str, list[Prompt]], form: str, c: float) -> dict[str, list[dict[str, float]]]:
    """Each set's chances from a scorer trained on all the other sets."""
    out = {}
    for name, rows in sets.items():
        rest = [p.example for other, ps in sets.items() if other != name for p in ps]
        found = scorer(rest, form, c)
        out[name] = [found.chances(p.example.ids) for p in rows]
    return out


def calibration(
    examples: Sequence[Example], chances: Sequence[dict[str, float]]
) -> list[dict[str, float]]:
    """quality_bias -> share sent to strong, quality / always-strong quality, over ~50 knob
    settings spanning the curve (quantiles of where decisions change, and both ends)."""
    marks = sorted(1.0 - (ch.get("strong", 1.0) - ch["weak"]) for ch in chances)
    step = max(1, len(marks) // CALIBRATION_POINTS)
    biases = sorted({marks[0] - 1e-6, *marks[::step], marks[-1], marks[-1] + 1e-6})
    strong_quality = sum(ex.labels["strong"] for ex in examples) / len(examples)
    out = []
    for bias in biases:
        picks = [policy.learned_pick(["weak"], "strong", ch, bias) for ch in chances]
        quality = sum(ex.labels[a] for ex, a in zip(examples, picks, strict=True)) / len(examples)
        out.append(
            {
                "quality_bias": round(bias, 6),
                "strong_share": round(picks.count("strong") / len(picks), 6),
                "quality_share": round(quality / strong_quality, 6),
            }
        )
    return out


def tune(
    sets: dict[str, list[Prompt]], cfg: Config, forms: Sequence[str], grid: Sequence[float]
) -> tuple[dict[tuple[str, float], dict[str, float]], dict[tuple[str, float], Any]]:
    """APGR per (form, C) per left-out set, and the predictions behind them."""
    scores: dict[tuple[str, float], dict[str, float]] = {}
    predictions: dict[tuple[str, float], Any] = {}
    for form in forms:
        for c in grid:
            started = time.monotonic()
            found = loso(sets, form, c)
            predictions[(form, c)] = found
            scores[(form, c)] = {
                name: apgr(cfg, [p.example for p in sets[name]], found[name])["learned"]["apgr"]
                for name in sets
            }
            mean = sum(scores[(form, c)].values()) / len(sets)
            print(
                f"{form:5} C={c:<5} mean {mean:.4f} "
                + " ".join(f"{n} {a:.4f}" for n, a in scores[(form, c)].items())
                + f" ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
            )
    return scores, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=OUT, help="what bench.prior.sets wrote")
    parser.add_argument(
        "--extra", action="store_true", help="train on the unlicensed RouterDC sets too"
    )
    parser.add_argument("--prior-dir", type=Path, default=PRIOR_DIR)
    parser.add_argument("--grid", type=float, nargs="*", default=list(C_GRID))
    args = parser.parse_args()
    names = TRAINING + (EXTRA if args.extra else [])
    sets = {name: load(name, args.data) for name in names}
    cfg = config()
    scores, predictions = tune(sets, cfg, FORMS, args.grid)
    means = {key: sum(v.values()) / len(v) for key, v in scores.items()}
    form, c = max(means, key=lambda k: (means[k], k[0] == "weak"))
    print(f"chosen: {form} C={c} mean LOSO APGR {means[(form, c)]:.4f}", file=sys.stderr)
    everything = [p.example for ps in sets.values() for p in ps]
    pooled = [ch for name in sets for ch in predictions[(form, c)][name]]
    prior = model_file(everything, form, c)
    prior["sources"] = names
    prior["form"] = form
    prior["regularization"] = c
    prior["calibration"] = calibration(everything, pooled)
    prior["loso_apgr"] = {
        f"{f} C={cc}": {n: round(a, 4) for n, a in v.items()} for (f, cc), v in scores.items()
    }
    args.prior_dir.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(prior, separators=(",", ":")).encode()
    (args.prior_dir / "prior.json.gz").write_bytes(gzip.compress(blob, 9, mtime=0))
    manifest = sorted({f"{digest(p.prompt)} {p.set}" for ps in sets.values() for p in ps})
    (args.prior_dir / "manifest.txt.gz").write_bytes(
        gzip.compress(("\n".join(manifest) + "\n").encode(), 9, mtime=0)
    )
    heldout = (args.data / "heldout.sha256").read_bytes()
    HELDOUT.write_bytes(gzip.compress(heldout, 9, mtime=0))
    for path in (args.prior_dir / "prior.json.gz", args.prior_dir / "manifest.txt.gz", HELDOUT):
        print(f"{path}: {path.stat().st_size:,} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
