"""`python -m bench.prior.evaluate`: how well the shipped day-one prior routes prompts it never
saw, written to bench/results/prior.md.

Held-out sets are routed by the shipped pirouter_py/routing/prior_data/prior.json.gz (loaded by
`learned.load`, as the daemon would); each training set by the same form and C trained on the
other training sets (leave-one-set-out). APGR comes from `pirouter_py.learning.evaluate` with
a weak (basic, cheap) and a strong (premium, dear) model and the same tokens for every prompt,
so the cost share x is the share sent to strong, as in RouteLLM. Beside it: the difficulty
ladder's single point (x, PGR) and the APGR of mixing it with always-weak and always-strong
(the curve (0,0)-(x,PGR)-(1,1)); random routing's APGR is 0.5. Then the operating point at the
calibration's quality_bias for a quality share of at least 0.95.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.prior.build import (
    HELDOUT_SETS,
    PRIOR_DIR,
    ROOT,
    Prompt,
    apgr,
    config,
    load,
    loso,
    scorer,
)
from bench.prior.sets import OUT
from pirouter_py.learning import evaluate
from pirouter_py.routing import learned, policy, prior

RESULTS = ROOT / "bench" / "results" / "prior.md"
TARGET_SHARE = 0.95  # the quality share (of always-strong's) the operating point asks for
BAR_MEAN, BAR_EACH = 0.54, 0.48  # mean held-out APGR at least, and each at least


def shipped(prior_dir: Path) -> tuple[dict[str, Any], learned.Scorer]:
    """The prior's file as JSON (its metadata) and as the daemon loads it."""
    path = prior_dir / "prior.json.gz"
    return json.loads(gzip.decompress(path.read_bytes())), prior.load_prior(path)


def ladder_apgr(x: float, pgr: float) -> float:
    """The area under (0,0)-(x,pgr)-(1,1): the ladder mixed with always-weak / always-strong."""
    return x * pgr / 2 + (1 - x) * (pgr + 1) / 2


def bias_for(calibration: Sequence[dict[str, float]], share: float) -> float:
    """The least quality_bias whose (training) quality share reaches `share`."""
    for point in calibration:
        if point["quality_share"] >= share:
            return point["quality_bias"]
    return calibration[-1]["quality_bias"]


def operating(
    rows: Sequence[Prompt], chances: Sequence[dict[str, float]], bias: float
) -> dict[str, float]:
    picks = [policy.learned_pick(["weak"], "strong", ch, bias) for ch in chances]
    labels = [p.example.labels for p in rows]
    quality = sum(lab[a] for lab, a in zip(labels, picks, strict=True)) / len(rows)
    weak = sum(lab["weak"] for lab in labels) / len(rows)
    strong = sum(lab["strong"] for lab in labels) / len(rows)
    return {
        "strong_share": picks.count("strong") / len(picks),
        "quality": quality,
        "quality_share": quality / strong if strong else 1.0,
        "pgr": (quality - weak) / (strong - weak) if strong != weak else 1.0,
    }


def row(
    name: str,
    kind: str,
    rows: Sequence[Prompt],
    chances: Sequence[dict[str, float]],
    other: float | None,
    bias: float,
) -> dict[str, Any]:
    report = evaluate.evaluate(config(), [p.example for p in rows], lambda i, _ex: chances[i])
    lad = report["ladder"]
    op = operating(rows, chances, bias)
    return {
        "set": name,
        "kind": kind,
        "prompts": report["evaluated"],
        "weak": report["always"]["weak"]["quality"],
        "strong": report["always"]["strong"]["quality"],
        "apgr": report["learned"]["apgr"],
        "other_form_apgr": other,
        "ladder_x": lad["x"],
        "ladder_pgr": lad["pgr"],
        "ladder_apgr": ladder_apgr(lad["x"], lad["pgr"]) if lad["pgr"] is not None else None,
        "oracle_apgr": report["oracle"]["apgr"],
        "op": op,
    }


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def render(prior: dict[str, Any], rows: list[dict[str, Any]], bias: float, other_form: str) -> str:
    held = [r for r in rows if r["kind"] == "held-out"]
    mean = sum(r["apgr"] for r in held) / len(held)
    worst = min(r["apgr"] for r in held)
    passed = mean >= BAR_MEAN and worst >= BAR_EACH
    lines = [
        "# The day-one prior: APGR on prompts it never saw",
        "",
        f"Prior: form `{prior['form']}` (`weak`: P(weak good) learned, strong keeps its rate; "
        f"`both`: both learned), C = {prior['regularization']}, trained on "
        f"{', '.join(prior['sources'])} ({prior['labels']} prompts). "
        "Built by `python -m bench.prior.build`; this file by `python -m bench.prior.evaluate`.",
        "",
        "APGR: area under PGR over the share sent to strong (random 0.5). Held-out sets: the "
        "shipped prior. Training sets: leave-one-set-out (the same form and C, trained on the "
        f"other training sets). `other form`: the same with `{other_form}` (not chosen). Ladder: "
        "the difficulty ladder's one point (x = strong share, PGR) and the APGR of mixing it with "
        "the two always-one-model routers. Operating point: quality_bias "
        f"{bias:.4f}, the least whose pooled training quality share is at least {TARGET_SHARE}.",
        "",
        "| set | kind | prompts | weak q | strong q | prior APGR | other form | ladder x | "
        "ladder PGR | ladder APGR | oracle | op: strong share | op: quality "
        "| op: quality share | op: PGR |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        op = r["op"]
        lines.append(
            f"| {r['set']} | {r['kind']} | {r['prompts']} | {_f(r['weak'])} | {_f(r['strong'])} "
            f"| **{_f(r['apgr'])}** | {_f(r['other_form_apgr'])} | {_f(r['ladder_x'])} "
            f"| {_f(r['ladder_pgr'])} | {_f(r['ladder_apgr'])} | {_f(r['oracle_apgr'])} "
            f"| {_f(op['strong_share'])} | {_f(op['quality'])} | {_f(op['quality_share'])} "
            f"| {_f(op['pgr'])} |"
        )
    loso_rows = [r for r in rows if r["kind"] != "held-out"]
    lines += [
        "",
        f"Held-out mean APGR {mean:.3f}, lowest {worst:.3f} "
        f"(bar: mean >= {BAR_MEAN}, none < {BAR_EACH}): **{'met' if passed else 'NOT met'}**.",
        f"Leave-one-set-out mean APGR {sum(r['apgr'] for r in loso_rows) / len(loso_rows):.3f}.",
        "",
        "Leave-one-set-out APGR per form and C (what chose the prior):",
        "",
        "| form, C | " + " | ".join(prior["sources"]) + " | mean |",
        "|---|" + "---:|" * (len(prior["sources"]) + 1),
    ]
    for key, scores in prior["loso_apgr"].items():
        values = [scores[n] for n in prior["sources"]]
        lines.append(
            f"| {key} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {sum(values) / len(values):.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=OUT)
    parser.add_argument("--prior-dir", type=Path, default=PRIOR_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    prior, found = shipped(args.prior_dir)
    form, c = prior["form"], prior["regularization"]
    other_form = "both" if form == "weak" else "weak"
    bias = bias_for(prior["calibration"], TARGET_SHARE)
    training = {name: load(name, args.data) for name in prior["sources"]}
    heldout = {name: load(name, args.data) for name in HELDOUT_SETS}
    other = scorer([p.example for ps in training.values() for p in ps], other_form, c)
    rows = []
    for name, ps in heldout.items():
        chances = [found.chances(p.example.ids) for p in ps]
        alt = [other.chances(p.example.ids) for p in ps]
        alt_apgr = apgr(config(), [p.example for p in ps], alt)["learned"]["apgr"]
        rows.append(row(name, "held-out", ps, chances, alt_apgr, bias))
    mine, theirs = loso(training, form, c), loso(training, other_form, c)
    for name, ps in training.items():
        alt_apgr = apgr(config(), [p.example for p in ps], theirs[name])["learned"]["apgr"]
        rows.append(row(name, "LOSO", ps, mine[name], alt_apgr, bias))
    text = render(prior, rows, bias, other_form)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
