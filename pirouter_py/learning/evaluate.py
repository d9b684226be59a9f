"""`pirouter eval`: route labelled prompts with the config (no upstream calls) and report what
RouteLLM reports. Pure: the examples, a config and per-example learned chances in, a report out.

Quality is the mean label of the model each prompt is routed to; costs are priced from the
example's tokens for that model (else the prompt's estimate in and DEFAULT_OUT_TOKENS out). The
strongest labelled model (highest quality tier, then priciest) and the weakest (cheapest) bound
the curve: PGR = (quality - weakest's) / (strongest's - weakest's), plotted against the cost
share x = (cost - weakest's) / (strongest's - weakest's), which with two models and equal tokens
is the share of calls to the strong model, as in RouteLLM. Sweeping the learned router's knob
(`quality_bias`: a cheaper model answers when its predicted chance is at most 1 - bias below the
strongest's) traces a curve; APGR is the area under its PGR over x in [0, 1]. A random
router (mixing the weakest and strongest) has APGR 0.5 exactly; the oracle is the learned router
with the labels as its predictions.

Each example is decided by `routing.decide` with its headers, as the daemon decides it; with a
trained model (`scorer_chances`) the operating point is decide's own decision with that model,
so eval, `route`, `replay` and the daemon agree. Held-out predictions (cross-validation) are
routed by the policy's `learned_pick` at [routing] quality_bias, as decide would with a model
predicting them. `decisions` lists each example's primary at the operating point (None: not
evaluated), in the file's order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pirouter_py.config import Config
from pirouter_py.errors import ExitCode, PirouterError
from pirouter_py.learning.data import Example
from pirouter_py.ledger.pricing import cost
from pirouter_py.routing import policy
from pirouter_py.routing.decide import decide

DEFAULT_OUT_TOKENS = 256  # output tokens assumed where an example gives none
SWEEP_POINTS = 50  # knob settings tried (quantiles of the predicted chances)
Chances = Callable[[int, Example], dict[str, float] | None]


class ScorerChances:
    """A trained model's predictions for each example; `evaluate` decides with the model
    itself, through `routing.decide`, as the daemon does."""

    __slots__ = ("scorer",)

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer  # what decide() takes as its `scorer`: it has chances(ids)

    def __call__(self, _i: int, ex: Example) -> dict[str, float]:
        return dict(self.scorer.chances(ex.ids))


class EvalError(PirouterError):
    exit_code = ExitCode.USAGE


def _costs(config: Config, ex: Example, tokens_in: int) -> dict[str, float]:
    out = {}
    for alias in ex.labels:
        model = config.models.get(alias)
        if model is not None:
            tin, tout = ex.tokens.get(alias, (tokens_in, DEFAULT_OUT_TOKENS))
            out[alias] = cost(model, tin, tout)
    return out


class _Case:
    """One routable example: its costs, and how the learned policy may route it."""

    __slots__ = ("chances", "cheaper", "costs", "ex", "fixed", "ladder", "strongest")

    def __init__(self, ex: Example, costs: dict[str, float]) -> None:
        self.ex, self.costs = ex, costs
        self.fixed: str | None = (
            None  # a rule's or requested model's choice: the knob moves nothing
        )
        self.ladder = ""  # the difficulty ladder's choice
        self.cheaper: list[str] = []
        self.strongest = ""
        self.chances: dict[str, float] = {}

    def pick(self, chances: Mapping[str, float], bias: float) -> str:
        if self.fixed is not None:
            return self.fixed
        if not any(a in chances for a in self.cheaper):
            return self.ladder
        return policy.learned_pick(self.cheaper, self.strongest, chances, bias)


def _point(cases: Sequence[_Case], picks: Sequence[str]) -> dict[str, Any]:
    share: Counter[str] = Counter(picks)
    pairs = list(zip(cases, picks, strict=True))
    labelled = [c.ex.labels[a] for c, a in pairs if a in c.ex.labels]
    total = sum(c.costs.get(a, 0.0) for c, a in pairs)
    return {
        "quality": sum(labelled) / len(labelled) if labelled else None,
        "cost_usd": total,
        "unlabelled": len(cases) - len(labelled),
        "share": {a: n / len(cases) for a, n in sorted(share.items())},
    }


def _always(cases: Sequence[_Case], alias: str) -> dict[str, Any]:
    return _point(cases, [alias] * len(cases))


def _scaled(point: dict[str, Any], weak: dict[str, Any], strong: dict[str, Any]) -> None:
    """Add the cost share x and PGR to a point."""
    span = strong["cost_usd"] - weak["cost_usd"]
    gap = strong["quality"] - weak["quality"]
    point["x"] = (point["cost_usd"] - weak["cost_usd"]) / span if span else 0.0
    point["pgr"] = (
        (point["quality"] - weak["quality"]) / gap if gap and point["quality"] is not None else None
    )
    point["cost_vs_strongest"] = (
        point["cost_usd"] / strong["cost_usd"] if strong["cost_usd"] else None
    )


def _area(points: list[dict[str, Any]]) -> float | None:
    """The area under PGR over x in [0, 1] (trapezoids; the curve is extended flat to the ends)."""
    curve = sorted((min(1.0, max(0.0, p["x"])), p["pgr"]) for p in points if p["pgr"] is not None)
    if not curve:
        return None
    curve = [(0.0, curve[0][1]), *curve, (1.0, curve[-1][1])]
    return sum(float((x1 - x0) * (y0 + y1) / 2) for (x0, y0), (x1, y1) in itertools.pairwise(curve))


def _reach(points: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The cheapest point of the curve reaching `target` PGR (interpolated along x)."""
    curve = sorted((p["x"], p["pgr"], p["cost_usd"]) for p in points if p["pgr"] is not None)
    for i, (x, pgr, usd) in enumerate(curve):
        if pgr >= target:
            if i == 0 or curve[i - 1][1] >= target:
                return {"x": x, "cost_usd": usd}
            x0, p0, c0 = curve[i - 1]
            f = (target - p0) / (pgr - p0)
            return {"x": x0 + f * (x - x0), "cost_usd": c0 + f * (usd - c0)}
    return None


def _sweep(
    cases: Sequence[_Case],
    chances: Sequence[Mapping[str, float]],
    weak: dict[str, Any],
    strong: dict[str, Any],
    biases: Sequence[float],
) -> dict[str, Any]:
    points = []
    for bias in biases:
        point = _point(cases, [c.pick(ch, bias) for c, ch in zip(cases, chances, strict=True)])
        point["quality_bias"] = bias
        _scaled(point, weak, strong)
        points.append(point)
    return {
        "apgr": _area(points),
        "reach_50": _reach(points, 0.5),
        "reach_80": _reach(points, 0.8),
        "points": points,
    }


def _biases(cases: Sequence[_Case]) -> list[float]:
    """Knob settings spanning the curve: a cheaper model c is taken while the bias is at most
    1 - (chance of the strongest - chance of c), so those values (their quantiles) are where
    decisions change; below the least, every prompt goes to a cheaper model, above the greatest,
    to the strongest."""
    values = sorted(
        1.0 - (c.chances.get(c.strongest, 1.0) - p)
        for c in cases
        for a, p in c.chances.items()
        if a in c.cheaper
    )
    if not values:
        return []
    step = max(1, len(values) // SWEEP_POINTS)
    return sorted({*values[::step], values[-1], values[-1] + 1e-9})


def evaluate(
    config: Config,
    examples: Sequence[Example],
    chances: Chances | None,
    bias: float | Sequence[float] | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report: `chances(i, example)` gives the learned router's predictions for example i
    (a trained scorer's, or held-out ones under cross-validation), None without one;
    `unavailable` models (a key variable unset) are left out as the daemon leaves them out."""
    known = sorted({a for ex in examples for a in ex.labels if a in config.models})
    ignored = sorted({a for ex in examples for a in ex.labels} - set(known))
    if len(known) < 2:
        raise EvalError(
            "eval needs labels for at least two of the config's models; the file labels "
            + (", ".join(sorted({a for ex in examples for a in ex.labels})) or "none")
            + f" and the config has {', '.join(config.aliases) or 'no models'}"
        )
    models = config.models
    # the router's threshold (prior.Router.bias: the config's quality_bias, else calibrated),
    # or one per example (cross-validation: each fold's from the other folds)
    fixed = bias if bias is not None else config.routing.quality_bias
    per_example: list[float] | None = None
    operating = policy.FALLBACK_BIAS
    if isinstance(fixed, Sequence):
        per_example = list(fixed)
    elif fixed is not None:
        operating = float(fixed)
    strongest = max(known, key=lambda a: (models[a].rank, models[a].cost, a))
    weakest = min(known, key=lambda a: (models[a].cost, models[a].rank, a))
    cases: list[_Case] = []
    ops: list[str] = []
    decisions: list[str | None] = []
    scorer = chances.scorer if isinstance(chances, ScorerChances) else None
    counts = Counter[str]()
    for i, ex in enumerate(examples):
        decisions.append(None)
        if ex.request is None:
            counts["without_text"] += 1
            continue
        if strongest not in ex.labels or weakest not in ex.labels:
            counts["incomplete"] += 1
            continue
        try:
            ladder = decide(config, ex.request, ex.headers, unavailable=unavailable)
            learned_decision = (
                decide(config, ex.request, ex.headers, scorer=scorer, unavailable=unavailable)
                if scorer is not None
                else None
            )
        except PirouterError:
            counts["not_routable"] += 1
            continue
        case = _Case(ex, _costs(config, ex, ladder.features.estimated_tokens))
        case.ladder = ladder.primary
        predicted = chances(i, ex) if chances is not None else None
        if ladder.source != "policy":
            case.fixed = ladder.primary
        else:
            fitting = policy.capable(config, ladder.features, ladder.difficulty, ladder.profile)
            fitting = [am for am in fitting if am[0] not in (unavailable or {})]
            case.cheaper, case.strongest = policy.learned_order(fitting)
            case.chances = predicted or {}
        use = config.routing.learned and predicted is not None
        if learned_decision is not None and use:  # the daemon's own decision with this model
            ops.append(learned_decision.primary)
        else:
            at = per_example[i] if per_example is not None else operating
            ops.append(case.pick(case.chances, at) if use else case.ladder)
        decisions[-1] = ops[-1]
        cases.append(case)
    if not cases:
        raise EvalError(
            f"no example could be routed and judged: {counts['without_text']} without text, "
            f"{counts['incomplete']} without labels for both {weakest} and {strongest}, "
            f"{counts['not_routable']} that no model can take"
        )
    weak, strong = _always(cases, weakest), _always(cases, strongest)
    for point in (weak, strong):
        _scaled(point, weak, strong)
    ladder_point = _point(cases, [c.ladder for c in cases])
    op = _point(cases, ops)
    for point in (ladder_point, op):
        _scaled(point, weak, strong)
    oracle_chances = [dict(c.ex.labels) for c in cases]
    oracle = _sweep(cases, oracle_chances, weak, strong, [0.0, 0.5, 1.0 + 1e-9])
    report: dict[str, Any] = {
        "examples": len(examples),
        "evaluated": len(cases),
        "without_text": counts["without_text"],
        "incomplete": counts["incomplete"],
        "not_routable": counts["not_routable"],
        "ignored_aliases": ignored,
        "weakest": weakest,
        "strongest": strongest,
        "always": {a: _always(cases, a) for a in known},
        "operating_point": op,
        "router": "learned" if config.routing.learned and chances is not None else "ladder",
        # the threshold; with one per example, their mean (and "quality_bias_per_fold")
        "quality_bias": (sum(per_example) / len(per_example) if per_example else operating),
        "quality_bias_per_fold": sorted(set(per_example)) if per_example else None,
        "ladder": ladder_point,
        "random": {"apgr": 0.5, "reach_50": {"x": 0.5}, "reach_80": {"x": 0.8}},
        "oracle": {"apgr": oracle["apgr"], "point": oracle["points"][1]},
        "learned": None,
        "decisions": decisions,
    }
    for alias in known:
        _scaled(report["always"][alias], weak, strong)
    biases = _biases(cases)
    if biases:
        report["learned"] = _sweep(cases, [c.chances for c in cases], weak, strong, biases)
    return report


def scorer_chances(scorer: Any) -> Chances:
    """The predictions of `scorer` (what decide() takes), which `evaluate` decides with."""
    return ScorerChances(scorer)
