"""The day-one prior (routing/prior.py): its tiers mapped onto a config's aliases, the blend with
the owner's model as labels accumulate, the threshold a quality target picks, and the one loader
the daemon and the commands share."""

from __future__ import annotations

import gzip
import math
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest

from pirouter_py.learning import train
from pirouter_py.routing import learned, policy, prior
from pirouter_py.routing.decide import decide
from tests.test_learning import chat, config

EASY, HARD = "hello", "theorem"  # words the synthetic prior finds easy and hard


def _weights(easy: float, hard: float) -> array[float]:
    weights = array("f", bytes(4 * learned.BUCKETS))
    weights[learned._bucket(EASY)] = easy
    weights[learned._bucket(HARD)] = hard
    return weights


def synthetic_prior(calibration: learned.Calibration = ()) -> learned.Scorer:
    """Weak answers "hello" prompts well and "theorem" ones badly; strong answers both."""
    return learned.Scorer(
        {
            prior.WEAK: learned.AliasModel(0.0, _weights(8.0, -8.0), 1000, 500),
            prior.STRONG: learned.AliasModel(2.0, None, 1000, 900),
        },
        0.0,
        1000,
        calibration,
    )


def owner_model(alias: str, chance: float, labels: int) -> learned.Scorer:
    zero = array("f", bytes(4 * learned.BUCKETS))
    logit = math.log(chance / (1 - chance))
    return learned.Scorer({alias: learned.AliasModel(logit, zero, labels, labels // 2)}, 0.0, 1)


def test_tiers_map_onto_the_config_by_quality_rank() -> None:
    cfg = config("[routing]\nlearned = true\n")  # small basic, mid standard, big strong
    assert prior.tier_shares(cfg) == {"small": 0.0, "mid": 0.5, "big": 1.0}
    router = prior.router(cfg, None, synthetic_prior())
    assert router is not None and router.source == "prior"
    ids = learned.request_ids(chat(f"{EASY} world"), _features(f"{EASY} world"))
    chances = router.chances(ids)
    weak, strong = chances["small"], chances["big"]
    assert weak > 0.9 and strong == pytest.approx(0.9)  # strong: its rate (no weights)
    assert chances["mid"] == pytest.approx((weak + strong) / 2)


def _features(text: str) -> Any:
    from pirouter_py.routing import features

    return features.extract(chat(text))


def test_the_prior_routes_from_the_first_request_and_says_so() -> None:
    cfg = config("[routing]\nlearned = true\nquality_bias = 0.9\n")
    router = prior.router(cfg, None, synthetic_prior())
    easy = decide(cfg, chat(f"{EASY} there, a short one"), {}, scorer=router, explain=True)
    hard = decide(cfg, chat(f"prove this {HARD} for me"), {}, scorer=router, explain=True)
    assert (easy.primary, easy.decider) == ("small", "prior")
    assert (hard.primary, hard.decider) == ("big", "prior")
    shown = dict(hard.chances)
    assert set(shown) == {"small", "mid", "big"} and shown["small"] < 0.3 < shown["big"]
    # no router: the ladder decides and nobody is named
    ladder = decide(cfg, chat(f"{EASY} there, a short one"), {})
    assert ladder.decider is None and ladder.chances == ()


def test_the_owners_rate_of_the_strongest_is_not_lost_to_the_prior() -> None:
    """The strongest model is seldom wrong, so the owner has only its rate; with thousands of
    labels that rate, not the prior's, is what a cheaper model is compared with."""
    cfg = config("[routing]\nlearned = true\nquality_bias = 0.9\n")
    zero = array("f", bytes(4 * learned.BUCKETS))
    owner = learned.Scorer(
        {
            "small": learned.AliasModel(math.log(0.85 / 0.15), zero, 5000, 4250),
            "big": learned.AliasModel(0.0, None, 5000, 4990),  # its rate only
        },
        0.0,
        5000,
    )
    text = "what is the capital of france"
    alone = decide(
        cfg,
        chat(text),
        {},
        scorer=prior.router(
            config("[routing]\nlearned = true\nquality_bias = 0.9\nprior = false\n"), owner, None
        ),
    )
    blended = decide(cfg, chat(text), {}, scorer=prior.router(cfg, owner, synthetic_prior()))
    assert alone.primary == blended.primary == "big"  # 0.85 is more than 0.1 below ~0.99


def test_the_prior_alone_keeps_the_ladders_floor_where_the_ladder_had_a_reason() -> None:
    """The prior learned exam questions: a prompt the ladder finds hard (a keyword: "debug")
    goes to a model of the tier it needs even when the prior rates the weak tier high; the
    owner's own model, trained on this install's traffic, is trusted below the floor."""
    cfg = config("[routing]\nlearned = true\nquality_bias = 0.9\n")
    text = f"{EASY} there, debug this race condition"
    assert decide(cfg, chat(text), {}).difficulty == "hard"
    alone = decide(cfg, chat(text), {}, scorer=prior.router(cfg, None, synthetic_prior()))
    assert alone.primary == "big" and alone.decider is None  # only big reaches "strong"
    owned = prior.router(cfg, owner_model("small", 0.99, 5000), synthetic_prior())
    trusted = decide(cfg, chat(text), {}, scorer=owned)
    assert (trusted.primary, trusted.decider) == ("small", "learned+prior")
    # the floor is per alias: one the owner has few labels of is still the prior's
    assert owned is not None and "small" not in owned.floored and "mid" in owned.floored
    few = prior.router(cfg, owner_model("small", 0.99, 50), synthetic_prior())
    assert few is not None and "small" in few.floored
    assert decide(cfg, chat(text), {}, scorer=few).primary == "big"


def test_the_owner_model_takes_over_as_its_labels_accumulate() -> None:
    cfg = config("[routing]\nlearned = true\n")
    ids = learned.request_ids(chat(HARD), _features(HARD))
    base = prior.router(cfg, None, synthetic_prior())
    assert base is not None
    from_prior = base.chances(ids)["small"]
    mixed = []
    for labels in (50, 200, 5000):
        router = prior.router(cfg, owner_model("small", 0.9, labels), synthetic_prior())
        assert router is not None and router.source == "learned+prior"
        got = router.chances(ids)["small"]
        weight = labels / (labels + prior.PRIOR_STRENGTH)
        assert got == pytest.approx(weight * 0.9 + (1 - weight) * from_prior, rel=1e-5)
        mixed.append(got)
    assert mixed == sorted(mixed) and mixed[-1] > 0.85  # toward the owner's 0.9
    # an alias the owner knows only by its rate (too seldom wrong to learn): the rate weighs
    # by its labels as a model would
    rate_only = learned.Scorer({"small": learned.AliasModel(0.0, None, 10, 9)}, 0.0, 10)
    router = prior.router(cfg, rate_only, synthetic_prior())
    weight = 10 / (10 + prior.PRIOR_STRENGTH)
    assert router is not None
    assert router.chances(ids)["small"] == pytest.approx(weight * 0.9 + (1 - weight) * from_prior)
    # the prior turned off: the owner's model alone (the rate, here)
    off = config("[routing]\nlearned = true\nprior = false\n")
    router = prior.router(off, rate_only, synthetic_prior())
    assert router is not None and router.source == "learned"
    assert router.chances(ids)["small"] == pytest.approx(0.9)
    assert prior.router(off, None, synthetic_prior()) is None


CURVE = ((0.0, 0.0, 0.80), (0.5, 0.3, 0.93), (0.7, 0.5, 0.96), (0.9, 0.8, 0.99), (1.0, 1.0, 1.0))


@pytest.mark.parametrize(
    ("target", "bias"), [(0.95, 0.7), (0.9, 0.5), (0.99, 0.9), (0.5, 0.0), (1.0, 1.0)]
)
def test_a_quality_target_picks_the_cheapest_threshold_reaching_it(
    target: float, bias: float
) -> None:
    assert prior.pick_bias(CURVE, target) == bias
    cfg = config(f"[routing]\nlearned = true\nquality_target = {target}\n")
    router = prior.router(cfg, None, synthetic_prior(CURVE))
    assert router is not None and router.bias == bias


def test_a_set_quality_bias_wins_and_the_owner_calibration_comes_first() -> None:
    cfg = config("[routing]\nlearned = true\nquality_bias = 0.42\n")
    router = prior.router(cfg, None, synthetic_prior(CURVE))
    assert router is not None and router.bias == 0.42
    owner = owner_model("small", 0.5, 500)
    owned = learned.Scorer(owner.models, 0.0, 500, ((0.2, 0.1, 0.99), (1.0, 1.0, 1.0)))
    router = prior.router(config("[routing]\nlearned = true\n"), owned, synthetic_prior(CURVE))
    assert router is not None and router.bias == 0.2
    # neither a setting nor a calibration: the old default
    router = prior.router(config("[routing]\nlearned = true\n"), owner, synthetic_prior())
    assert router is not None and router.bias == policy.FALLBACK_BIAS
    assert prior.pick_bias((), 0.95) is None


def test_build_loads_the_owner_model_and_the_prior_and_names_what_failed(tmp_path: Path) -> None:
    missing = tmp_path / "learned.json"
    assert prior.build(config(), missing) == (None, [])  # learned off: nothing read
    off = config("[routing]\nlearned = true\nprior = false\n")
    assert prior.build(off, missing) == (None, [])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    router, problems = prior.build(off, broken)
    assert router is None and len(problems) == 1 and "pirouter learn" in problems[0]


def test_the_shipped_prior_loads_and_maps() -> None:
    shipped = prior.load_prior()
    assert set(shipped.models) == {prior.WEAK, prior.STRONG}
    assert shipped.calibration and shipped.models[prior.WEAK].weights is not None
    router, problems = prior.build(config("[routing]\nlearned = true\n"), Path("/nonexistent"))
    assert problems == [] and router is not None and router.source == "prior"
    assert 0.0 < router.bias <= 1.0 + 1e-6
    easy = router.chances(learned.request_ids(chat("hi"), _features("hi")))
    assert set(easy) == {"small", "mid", "big"}


def test_an_unreadable_prior_is_named_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "prior.json.gz"
    bad.write_bytes(gzip.compress(orjson.dumps({"version": learned.VERSION})))
    with pytest.raises(learned.PirouterError, match=r"pirouter learn|prior"):
        prior.load_prior(bad)
    bad.write_bytes(b"not gzip")
    with pytest.raises(learned.PirouterError, match=r"prior = false"):
        prior.load_prior(bad)


def test_learn_calibrates_on_held_out_labels() -> None:
    """Synthetic labels: small is good on "hello" prompts, bad on "theorem" ones; big always.
    The calibration's curve runs from all-small to all-big, and a high target needs big for the
    hard half only."""
    from pirouter_py.learning import data

    cfg = config("[routing]\nlearned = true\n")
    lines = []
    for i in range(200):
        easy = i % 2 == 0
        word = EASY if easy else HARD
        lines.append(
            {"prompt": f"{word} number {i} of many", "labels": {"small": int(easy), "big": 1}}
        )
    examples = data.examples(lines)
    held, _ = train.held_out(examples, 5)
    points = train.calibrate(cfg, examples, held)
    curve = learned.calibration(points)
    assert curve[0][1] == 0.0 and curve[-1][1] == 1.0  # all small ... all big
    assert curve[0][2] == pytest.approx(0.5) and curve[-1][2] == pytest.approx(1.0)
    bias = prior.pick_bias(curve, 0.95)
    assert bias is not None
    chosen = next(p for p in curve if p[0] == bias)
    assert 0.45 <= chosen[1] <= 0.6  # the hard half goes to big
    assert all(p["cost_share"] <= 1.0 for p in points)


def test_route_shows_each_candidates_chance_and_what_decided(tmp_path: Path) -> None:
    """A new user's config with the learned router on and no labels: the shipped prior decides,
    and `route` says so, in text and JSON."""
    import json

    from typer.testing import CliRunner

    from pirouter_py.cli import app
    from tests.test_learning import MODELS

    path = tmp_path / "config.toml"
    path.write_text(
        MODELS.replace("{url}", "http://127.0.0.1:9")
        + f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n[routing]\nlearned = true\n'
    )
    runner = CliRunner()
    prompt = "What is the capital of France? Answer in one word."
    done = runner.invoke(app, ["route", "--config", str(path), "--prompt", prompt, "--json"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    explained = out["explanation"]
    assert explained["decided_by"] == "prior"
    chances = {c["alias"]: c["chance"] for c in explained["candidates"]}
    assert set(chances) == {"small", "mid", "big"} and all(0 < p < 1 for p in chances.values())
    assert out["rule"] == "policy:balanced:learned"
    text = runner.invoke(app, ["route", "--config", str(path), "--prompt", prompt])
    assert text.exit_code == 0
    assert "from the shipped prior" in text.stdout
    assert f"p={chances['small']:.2f}" in text.stdout
    # the prior off and no learned model: the ladder, and no chances shown
    path.write_text(path.read_text() + "prior = false\n")
    done = runner.invoke(app, ["route", "--config", str(path), "--prompt", prompt, "--json"])
    assert json.loads(done.stdout)["explanation"]["decided_by"] is None
    assert "chance" not in done.stdout


def test_learn_calibrates_the_router_the_daemon_will_use() -> None:
    """`learn`'s held-out chances are the blended router's (the prior's tiers included), not
    the new model's alone: what the printed operating point describes is what will run."""
    from pirouter_py.learning import data

    cfg = config("[routing]\nlearned = true\n")
    lines = [
        {"prompt": f"{EASY if i % 2 else HARD} number {i}", "labels": {"small": i % 2, "big": 1}}
        for i in range(200)
    ]
    examples = data.examples(lines)
    alone, folds = train.held_out(examples, 5)
    blended, same = train.held_out(examples, 5, lambda m: prior.router(cfg, m, synthetic_prior()))
    assert folds == same
    assert all(a is not None and "mid" not in a for a in alone)
    assert all(b is not None and "mid" in b for b in blended)  # the prior's tier for mid
    assert any(a["small"] != b["small"] for a, b in zip(alone, blended, strict=True) if a and b)


def test_eval_keeps_the_prior_out_of_its_own_training_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts the shipped prior was trained on (by the manifest's digests) are not scored
    with it: eval says so and routes without it."""
    import json

    from typer.testing import CliRunner

    from pirouter_py.cli import app
    from tests.test_learning import MODELS, synthetic

    lines = synthetic(120)
    file = tmp_path / "labels.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    path = tmp_path / "config.toml"
    path.write_text(
        MODELS.replace("{url}", "http://127.0.0.1:9")
        + f'[ledger]\npath = "{tmp_path / "ledger.db"}"\n[routing]\nlearned = true\n'
    )
    run = CliRunner().invoke(app, ["eval", str(file), "--json", "-c", str(path)])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["learned_from"] == "the shipped prior"
    digests = frozenset(prior.prompt_digest(line["prompt"]) for line in lines[:30])
    monkeypatch.setattr(prior, "trained_on", lambda: digests)
    run = CliRunner().invoke(app, ["eval", str(file), "--json", "-c", str(path)])
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    assert "trained the shipped prior: scored without it" in report["learned_from"]
    assert report["router"] == "ladder"  # no model of the owner's: nothing else to score


def test_the_manifest_digest_is_the_normalised_prompts() -> None:
    assert prior.prompt_digest("  What IS\n\tthe answer?  ") == prior.prompt_digest(
        "what is the answer?"
    )
    assert len(prior.trained_on()) > 10_000  # the shipped manifest reads
