"""`pirouter learn` and `pirouter eval`: train the learned router from labels, and measure a
router on labelled prompts (learning/)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    fail,
    guard,
    learned_path,
    learned_scorer,
    load,
    open_ledger,
    print_json,
)
from pirouter_py.cli.ledger import SinceOption, parse_since
from pirouter_py.errors import ExitCode, install_hint

if TYPE_CHECKING:
    from pirouter_py.config import LoadedConfig


def _ledger_examples(loaded: "LoadedConfig", since: float) -> tuple[list[Any], int]:
    """Examples from the ledger's labels, and how many labelled requests had neither text nor
    features (recorded before features were kept)."""
    from pirouter_py.learning import data
    from pirouter_py.ledger import labels

    db = open_ledger(loaded)
    if db is None:
        return [], 0
    try:
        lines = labels.read_labels(db, since)
    finally:
        db.close()
    out, bare = [], 0
    for line in lines:
        try:
            out.append(data.example(line))
        except ValueError:
            bare += 1
    return out, bare


@app.command("learn")
def learn(
    ctx: typer.Context,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labelled prompts (JSON lines, README 'Labelled prompts') instead of the "
            "ledger's own labels.",
            show_default=False,
        ),
    ] = None,
    since: SinceOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the model here (default: learned.json beside the ledger, where the "
            "daemon reads it).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train the learned router from the ledger's labels.

    Labels come from answers, escalations and feedback; one model per alias predicts whether
    its answer is good enough."""
    from pirouter_py.learning import data, train

    loaded = guard(lambda: load(ctx, config))
    if labels is not None:
        examples, bare = guard(lambda: data.read(labels)), 0
        if since:
            fail("--since reads the ledger; it does not apply to --labels", ExitCode.USAGE)
    else:
        examples, bare = _ledger_examples(loaded, parse_since(since) if since else 0)
    counts = train.counts(examples)
    learnable = {a for a, (n, good) in counts.items() if train.trainable(n, good)}
    report: dict[str, Any] = {
        "labels": len(examples),
        "without_features": bare,
        # how many labels each source gave (train.SOURCE_WEIGHTS weighs them); "given": a
        # labelled file's label that names no source
        "label_sources": _by_source(examples),
        "needs": {"labels": train.MIN_LABELS, "each_outcome": train.MIN_EACH},
        "models": {
            a: {
                "labels": n,
                "good": good,
                "learned": a in learnable,
                **({} if a in learnable else {"missing": train.shortfall(n, good)}),
            }
            for a, (n, good) in sorted(counts.items())
        },
    }
    if not learnable:
        report["written"] = None
        if as_json:
            print_json(report)
        else:
            _print_counts(report)
        routing = loaded.config.routing
        meanwhile = (
            "the shipped prior"
            if routing.learned and routing.prior
            else "the difficulty ladder"
            + ("" if routing.learned else " ([routing] learned is off)")
        )
        fail(
            f"too few labels to learn: {len(examples)} labelled requests, and each model needs "
            f"{train.MIN_LABELS}, with at least {train.MIN_EACH} good and {train.MIN_EACH} "
            f"escalated or bad; routing goes on by {meanwhile}",
            ExitCode.RUNTIME,
        )
    target = output or learned_path(loaded)
    model = guard(lambda: train.train(examples))
    # where the daemon will route: the new model's held-out chances, blended with the prior
    # as the daemon blends them
    wrap = _wrap(loaded.config, _shipped(loaded.config))
    held, _ = guard(lambda: train.held_out(examples, train.CALIBRATION_FOLDS, wrap))
    model["calibration"] = train.calibrate(loaded.config, examples, held)
    train.write(target, model)
    report["written"] = str(target)
    report["operating_point"] = _operating(loaded.config, model["calibration"])
    if as_json:
        print_json(report)
        return
    _print_counts(report)
    _print_operating(report["operating_point"])
    sys.stdout.write(f"wrote {target}\n")
    if not loaded.config.routing.learned:
        sys.stdout.write("set [routing] learned = true to route with it\n")
    else:
        sys.stdout.write("a running daemon loads it within seconds\n")


def _operating(config: Any, points: list[dict[str, float]]) -> dict[str, Any] | None:
    """Where the new model will route, on held-out labels: the point of its calibration that
    [routing] quality_target (or a set quality_bias) picks; None without a calibration."""
    from pirouter_py.routing import learned, prior

    calibration = learned.calibration(points)
    if not calibration:
        return None
    routing = config.routing
    bias = routing.quality_bias
    if bias is None:
        bias = prior.pick_bias(calibration, routing.quality_target)
    # the calibration point at (or nearest below and above) that threshold; a set quality_bias
    # is reported as set
    point = min(points, key=lambda p: (abs(p["quality_bias"] - bias), p["quality_bias"]))
    return {
        **point,
        "quality_bias": bias,
        "quality_target": None if routing.quality_bias is not None else routing.quality_target,
    }


def _print_operating(point: dict[str, Any] | None) -> None:
    if point is None:
        sys.stdout.write(
            "no held-out estimate of where it routes (too few labels of two models of the "
            "config to cross-validate)\n"
        )
        return
    why = (
        f"quality_target {point['quality_target']:g}"
        if point["quality_target"] is not None
        else f"quality_bias {point['quality_bias']:g}"
    )
    sys.stdout.write(
        f"at {why} (held-out labels): the strongest model takes {point['strong_share']:.0%} "
        f"of requests, keeping {point['quality_share']:.0%} of its quality at "
        f"{point['cost_share']:.0%} of its cost (equal tokens)\n"
    )


def _by_source(examples: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ex in examples:
        for alias in ex.labels:
            source = ex.sources.get(alias, "given")
            counts[source] = counts.get(source, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _print_counts(report: dict[str, Any]) -> None:
    lines = [f"{report['labels']} labelled requests"]
    if report["without_features"]:
        lines[0] += (
            f" ({report['without_features']} more without text or features: skipped; they came "
            "while the ledger kept neither the prompt ([ledger] store_prompts) nor its hashed "
            "words ([learning] keep_features, on with [routing] learned): "
            "`pirouter config set learning.keep_features true` keeps them from now on)"
        )
    if report["label_sources"]:
        counted = ", ".join(f"{s} {n}" for s, n in report["label_sources"].items())
        lines.append(f"  labels by source: {counted}")
    width = max((len(a) for a in report["models"]), default=5)
    lines.append(f"  {'model':<{width}}  labels  good  learned")
    for alias, m in report["models"].items():
        state = "yes" if m["learned"] else f"no: needs {m['missing']}"
        lines.append(f"  {alias:<{width}}  {m['labels']:>6}  {m['good']:>4}  {state}")
    sys.stdout.write("\n".join(lines) + "\n")


def _shipped(config: Any) -> Any:
    """The prior the daemon blends with the owner's model, or None ([routing] learned or prior
    off)."""
    from pirouter_py.routing import prior

    routing = config.routing
    return guard(prior.load_prior) if routing.learned and routing.prior else None


def _wrap(config: Any, shipped: Any) -> Any:
    """A fold's model as the daemon would route with it: blended with `shipped` (None: alone)."""
    from pirouter_py.routing import prior

    if shipped is None:
        return None
    return lambda model: prior.router(config, model, shipped) or model


def _cv_chances(examples: list[Any], folds: int, config: Any, shipped: Any) -> Any:
    """Held-out predictions (each example scored by the router that a model trained on the
    other folds makes, blended with `shipped` as the daemon would), and each example's fold."""
    from pirouter_py.learning import train

    held, fold_of = train.held_out(examples, folds, _wrap(config, shipped))
    if any(h is None for h in held):
        fail(
            f"a fold of {folds} has too few labels to learn from (each model needs "
            f"{train.MIN_LABELS}); use fewer folds or more labels",
            ExitCode.RUNTIME,
        )
    return (lambda i, _ex: held[i]), fold_of


def _cv_biases(
    config: Any, examples: list[Any], chances: Any, fold_of: list[int]
) -> float | list[float] | None:
    """The threshold each example is routed at: the configured quality_bias when set; else,
    for the examples of each fold, the one `learn` would pick for [routing] quality_target from
    the OTHER folds' held-out chances (so the operating point is not tuned on what it scores)."""
    from pirouter_py.learning import train
    from pirouter_py.routing import learned, policy, prior

    if config.routing.quality_bias is not None:
        return float(config.routing.quality_bias)
    held = [chances(i, ex) for i, ex in enumerate(examples)]
    out = [policy.FALLBACK_BIAS] * len(examples)
    for k in sorted(set(fold_of)):
        others = [i for i in range(len(examples)) if fold_of[i] != k]
        points = train.calibrate(config, [examples[i] for i in others], [held[i] for i in others])
        bias = prior.pick_bias(learned.calibration(points), config.routing.quality_target)
        for i in range(len(examples)):
            if fold_of[i] == k and bias is not None:
                out[i] = bias
    return out


def _prior_share(examples: list[Any]) -> float:
    """The share of `examples` whose latest instruction the shipped prior was trained on."""
    from pirouter_py.routing import features, prior

    seen = prior.trained_on()
    texts = [features.instruction(ex.request) for ex in examples if ex.request is not None]
    hits = sum(prior.prompt_digest(t) in seen for t in texts)
    return hits / max(len(examples), 1)


IN_SAMPLE = 0.5  # a file at least this much of the model's own training is cross-validated
IN_SAMPLE_FOLDS = 5


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Labelled prompts (JSON lines).")],
    cv: Annotated[
        int,
        typer.Option(
            "--cv",
            min=0,
            help="Cross-validate: train the learned router on all folds but one, predict the "
            "held-out one, K times (0: use the learned model beside the ledger, if any).",
        ),
    ] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot", help="Draw the quality/cost curves to this PNG or SVG.", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score routing on labelled prompts (no upstream calls).

    Routes them with the config and reports quality, share per model, cost, PGR, and the
    learned router's APGR next to random and the oracle."""
    from pirouter_py.learning import data, train
    from pirouter_py.learning import evaluate as ev
    from pirouter_py.routing import learned, prior

    if cv == 1:
        fail("--cv needs at least 2 folds", ExitCode.USAGE)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        fail(f"--plot {plot}: name a .png or .svg file", ExitCode.USAGE)
    loaded = guard(lambda: load(ctx, config))
    examples = guard(lambda: data.read(file))
    chances = None
    bias: Any = None
    source = "none"
    shipped = _shipped(loaded.config)
    notes = []
    if shipped is not None and (share := _prior_share(examples)):
        # the prior's own figures on its training prompts would be in-sample: scored without it
        shipped = None
        notes.append(
            f"{share:.0%} of these prompts trained the shipped prior: scored without it (as with "
            "[routing] prior = false), so no figure is in-sample"
        )
    if cv:
        chances, fold_of = _cv_chances(examples, cv, loaded.config, shipped)
        bias = _cv_biases(loaded.config, examples, chances, fold_of)
        source = f"{cv}-fold cross-validation, each fold's threshold from the other folds"
    else:
        path = learned_path(loaded)
        scorer = guard(lambda: learned.load(path))
        router = learned_scorer(loaded)  # the daemon's: the owner's model with the prior
        if router is not None and shipped is None and router.prior is not None:
            router = prior.router(loaded.config, router.owner, None)
        seen = train.trained_on(path) if scorer is not None else frozenset()
        overlap = sum(train.fingerprint(ex.ids) in seen for ex in examples) / max(len(examples), 1)
        if scorer is not None and overlap >= IN_SAMPLE:
            # its own figures on its training prompts would be in-sample: held-out folds instead
            folds = min(IN_SAMPLE_FOLDS, len(examples))
            chances, fold_of = _cv_chances(examples, folds, loaded.config, shipped)
            bias = _cv_biases(loaded.config, examples, chances, fold_of)
            source = (
                f"{folds}-fold cross-validation: the learned model at {path} was trained on "
                f"{overlap:.0%} of these prompts, so scoring it on them would be in-sample; "
                "give held-out prompts to score that model"
            )
        elif router is not None:
            chances, bias = ev.scorer_chances(router), router.bias
            source = str(path) if router.owner is not None else "the shipped prior"
            if router.source == "learned+prior":
                source += ", blended with the shipped prior"
            if overlap:
                source += f" ({overlap:.0%} of these prompts were in its training)"
        elif scorer is not None:
            chances, source = ev.scorer_chances(scorer), str(path)
            if overlap:
                source += f" ({overlap:.0%} of these prompts were in its training)"
    if notes:
        source += "; " + "; ".join(notes)
    report = guard(lambda: ev.evaluate(loaded.config, examples, chances, bias))
    report["learned_from"] = source
    if plot is not None:
        guard(lambda: _plot(report, plot))
        report["plot"] = str(plot)
    if as_json:
        print_json(report)
        return
    sys.stdout.write(_render(report))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _render(r: dict[str, Any]) -> str:
    out = [f"{r['evaluated']} of {r['examples']} labelled prompts routed"]
    skipped = [f"{r[k]} {k.replace('_', ' ')}" for k in ("without_text", "incomplete") if r[k]]
    if r["not_routable"]:
        skipped.append(f"{r['not_routable']} not routable")
    if skipped:
        out[0] += f" ({', '.join(skipped)})"
    if r["ignored_aliases"]:
        out.append(
            f"labels of models not in the config, ignored: {', '.join(r['ignored_aliases'])}"
        )
    out.append(f"weakest {r['weakest']}, strongest {r['strongest']}")
    out.append("")
    out.append(f"  {'router':<34} {'quality':>7} {'cost $':>10} {'vs strongest':>12} {'PGR':>6}")

    def row(name: str, p: dict[str, Any]) -> str:
        vs = _fmt(p.get("cost_vs_strongest"), ".1%")
        return (
            f"  {name:<34} {_fmt(p['quality']):>7} {p['cost_usd']:>10.4f} {vs:>12} "
            f"{_fmt(p.get('pgr'), '.2f'):>6}"
        )

    for alias, p in r["always"].items():
        out.append(row(f"always {alias}", p))
    out.append(row("difficulty ladder (v0.1)", r["ladder"]))
    op_name = f"this config ({r['router']}"
    op_name += f", bias {r['quality_bias']:.2f})" if r["router"] == "learned" else ")"
    out.append(row(op_name, r["operating_point"]))
    out.append(row("oracle", r["oracle"]["point"]))
    share = ", ".join(f"{a} {s:.0%}" for a, s in r["operating_point"]["share"].items())
    out.append(f"  share at this config: {share}")
    out.append("")
    lines = [("random", r["random"]["apgr"], r["random"]["reach_50"], r["random"]["reach_80"])]
    if r["learned"] is not None:
        lr = r["learned"]
        lines.insert(0, ("learned", lr["apgr"], lr["reach_50"], lr["reach_80"]))
    else:
        out.append(
            f"no learned router to sweep ({r['learned_from']}): run `pirouter learn`, or --cv K"
        )
    lines.append(("oracle", r["oracle"]["apgr"], None, None))
    out.append(f"  {'sweep':<10} {'APGR':>6} {'cost share to 50% gap':>22} {'to 80%':>8}")
    for name, apgr, r50, r80 in lines:
        a = _fmt(r50["x"] if r50 else None, ".1%")
        b = _fmt(r80["x"] if r80 else None, ".1%")
        out.append(f"  {name:<10} {_fmt(apgr):>6} {a:>22} {b:>8}")
    if r["learned"] is not None:
        out.append(f"  learned from: {r['learned_from']}")
    return "\n".join(out) + "\n"


def _plot(r: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from pirouter_py.learning.train import MissingExtra

        raise MissingExtra(f"--plot needs matplotlib: {install_hint('learn')}") from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    weak, strong = r["always"][r["weakest"]], r["always"][r["strongest"]]
    ax.plot([0, 1], [weak["quality"], strong["quality"]], "--", color="grey", label="random")
    if r["learned"] is not None:
        pts = sorted((p["x"], p["quality"]) for p in r["learned"]["points"])
        ax.plot([x for x, _ in pts], [q for _, q in pts], "-o", ms=3, label="learned (sweep)")
    oracle = r["oracle"]["point"]
    ax.plot(
        [0, oracle["x"], 1],
        [weak["quality"], oracle["quality"], strong["quality"]],
        ":",
        color="green",
        label="oracle",
    )
    ax.plot([r["ladder"]["x"]], [r["ladder"]["quality"]], "s", color="orange", label="ladder")
    op = r["operating_point"]
    ax.plot([op["x"]], [op["quality"]], "*", ms=12, color="red", label="this config")
    ax.set_xlabel(f"cost share ({r['weakest']} = 0, {r['strongest']} = 1)")
    ax.set_ylabel("quality (mean label)")
    apgr = r["learned"]["apgr"] if r["learned"] else None
    ax.set_title(f"pirouter eval: APGR learned {_fmt(apgr)}, random 0.500")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
