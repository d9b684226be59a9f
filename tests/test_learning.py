"""The learned router: features, the model file, the policy's use of it, `pirouter learn` and
`pirouter eval` (with an APGR computed by hand), and the loop from feedback over HTTP through
`learn` to a daemon routing with what it learned."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from pirouter_py.cli import app
from pirouter_py.config import parse_config
from pirouter_py.learning import data, evaluate, train
from pirouter_py.routing import learned, prior
from pirouter_py.routing.decide import decide
from pirouter_py.wire.codecs import BY_PROTOCOL
from tests.conftest import ROOT
from tests.fakes import Daemon, FakeUpstream

MODELS = """
[providers.fake]
type = "openai"
base_url = "{url}"
api_key = "k"
[models.small]
provider = "fake"
model_id = "m-small"
quality = "basic"
input_per_m = 0.0
output_per_m = 0.0
[models.mid]
provider = "fake"
model_id = "m-mid"
quality = "standard"
input_per_m = 0.5
output_per_m = 1.0
[models.big]
provider = "fake"
model_id = "m-big"
quality = "strong"
input_per_m = 1.0
output_per_m = 2.0
"""


def config(extra: str = "", url: str = "http://127.0.0.1:9") -> Any:
    return parse_config(MODELS.replace("{url}", url) + extra, "test.toml")[0]


def chat(text: str) -> Any:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    return BY_PROTOCOL["openai"].decode_request(orjson.dumps(body))


def test_feature_ids_are_stable_bounded_and_textless() -> None:
    a = learned.text_ids("Which river flows through Paris?")
    assert a == learned.text_ids("which RIVER flows through paris")  # case and punctuation
    assert a != learned.text_ids("Which river flows through Rome?")
    assert a == sorted(set(a)) and all(0 <= i < learned.BUCKETS for i in a)
    # words and word pairs: five words, four pairs, and the constant feature
    assert len(a) == 10
    # the same in another process (Python's own hash would differ: ids must not)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pirouter_py.routing import learned;"
            "print(learned.text_ids('Which river flows through Paris?'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == a
    long = " ".join(f"w{i}" for i in range(5000))
    assert len(learned.text_ids(long)) <= learned.MAX_IDS
    # a long text keeps its first words (and the constant and meta features), whatever their ids
    kept = set(learned.text_ids(long, ("~turn:user",)))
    head = set(learned.text_ids(" ".join(f"w{i}" for i in range(60)), ("~turn:user",)))
    assert head <= kept and len(kept) == learned.MAX_IDS  # head holds the fixed ids too
    encoded = learned.encode_ids(a)
    assert "river" not in encoded and learned.decode_ids(encoded) == a
    assert learned.decode_ids("not base64!") is None and learned.decode_ids("AAAA" + "AA==") is None
    assert len(encoded) == 4 * len(a)  # 3 bytes an id, in base64


def test_model_file_round_trip_and_chance(tmp_path: Path) -> None:
    weights = [0.0] * learned.BUCKETS
    ids = learned.text_ids("capital of france")
    for i in ids:
        weights[i] = 0.25
    path = tmp_path / "learned.json"
    model = {"bias": -1.0, "weights": learned.pack(weights), "labels": 60, "good": 30}
    train.write(
        path,
        {
            "version": learned.VERSION,
            "buckets": learned.BUCKETS,
            "trained_at": 1.0,
            "labels": 60,
            "models": {"small": model},
        },
    )
    assert path.stat().st_mode & 0o777 == 0o600
    scorer = learned.load(path)
    assert scorer is not None
    z = -1.0 + 0.25 * len(ids) / math.sqrt(len(ids))  # a row weighs 1/sqrt(its ids)
    assert scorer.chance("small", ids) == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-6)
    assert scorer.chance("big", ids) is None
    assert learned.load(tmp_path / "absent.json") is None
    path.write_text('{"version": 99}')
    with pytest.raises(learned.PirouterError, match="pirouter learn"):
        learned.load(path)


def _scorer(chances: dict[str, float]) -> learned.Scorer:
    """A scorer giving each alias a fixed chance whatever the request (bias only)."""
    zero = array("f", bytes(4 * learned.BUCKETS))
    models = {
        a: learned.AliasModel(math.log(p / (1 - p)), zero, 100, 50) for a, p in chances.items()
    }
    return learned.Scorer(models, 0.0, 100)


@pytest.mark.parametrize(
    ("chances", "bias", "primary", "why"),
    [
        # no model for big: it counts as always good enough
        ({"small": 0.8, "mid": 0.9}, 0.5, "small", "learned: small 0.80, big 1.00: within 1 - "),
        ({"small": 0.3, "mid": 0.7}, 0.5, "mid", "learned: mid 0.70, big 1.00"),
        ({"small": 0.3, "mid": 0.4}, 0.5, "big", "the strongest, big 1.00 (best cheaper: mid 0.40"),
        ({"small": 0.8, "mid": 0.9}, 0.95, "big", "the strongest"),
        ({"mid": 0.9}, 0.5, "mid", "learned: mid 0.90"),  # small has no model: passed over
        # big's own chance: what matters is how far below it a cheaper one is
        ({"small": 0.6, "big": 0.65}, 0.9, "small", "learned: small 0.60, big 0.65"),
        ({"small": 0.6, "big": 0.9}, 0.9, "big", "the strongest, big 0.90"),
    ],
)
def test_policy_takes_the_cheapest_model_predicted_good_enough(
    chances: dict[str, float], bias: float, primary: str, why: str
) -> None:
    cfg = config(f"[routing]\nlearned = true\nquality_bias = {bias}\n")
    # "debug" makes it hard for the ladder (big): the learned router decides instead
    d = decide(cfg, chat("debug this"), {}, scorer=prior.router(cfg, _scorer(chances), None))
    assert d.primary == primary
    assert d.rule == "policy:balanced:learned"
    assert any(why in n for n in d.notes), d.notes
    assert d.ids == learned.request_ids(chat("debug this"), d.features)
    assert all(cfg.models[a].rank >= cfg.models[primary].rank for a in d.cascade)


def test_policy_keeps_the_ladder_without_a_usable_model() -> None:
    on = config("[routing]\nlearned = true\n")
    # no scorer loaded, a scorer knowing only the strongest, or learned off: the ladder
    for cfg, scorer in (
        (on, None),
        (on, _scorer({"big": 0.9})),
        (config(), _scorer({"small": 0.9})),
    ):
        router = prior.router(cfg, scorer, None) if scorer is not None else None
        d = decide(cfg, chat("debug this"), {}, scorer=router)
        assert (d.primary, d.rule) == ("big", "policy:balanced:hard")
    # a rule still wins over the learned router
    ruled = config(
        '[routing]\nlearned = true\n[[rules]]\nname = "r"\n'
        'when = { always = true }\nthen = { primary = "mid" }\n'
    )
    router = prior.router(ruled, _scorer({"small": 0.99}), None)
    assert decide(ruled, chat("x"), {}, scorer=router).primary == "mid"


def test_eval_apgr_by_hand() -> None:
    """Two models, four prompts, costs from the tokens given. Worked by hand:
    weak (small) labels 1 1 0 0, strong (big) 1 1 1 0: q_weak 0.5, q_strong 0.75.
    Predicted chances for small 0.9 0.4 0.6 0.1. Sweeping the bias over them:
    all small (x 0, PGR 0); small for 0.9 0.4 0.6 (x .25, q .5, PGR 0); small for 0.9 0.6
    (x .5, q .5, PGR 0); small for 0.9 only (x .75, q .75, PGR 1); all big (x 1, PGR 1).
    APGR = trapezoids: 0 + 0 + 0.25 * (0 + 1) / 2 + 0.25 * 1 = 0.375; 50% of the gap at
    x = 0.5 + 0.5 * 0.25 = 0.625, 80% at 0.7. Oracle: big only where it is right and small is
    not (the third prompt: x .25, PGR 1): 0.25 * 1 / 2 + 0.75 * 1 = 0.875."""
    mid = MODELS[MODELS.index("[models.mid]") : MODELS.index("[models.big]")]
    text = MODELS.replace(mid, "").replace("{url}", "http://127.0.0.1:9")
    cfg = parse_config(text + "[routing]\nlearned = true\nquality_bias = 0.5\n", "t.toml")[0]
    weak, strong, chances = [1, 1, 0, 0], [1, 1, 1, 0], [0.9, 0.4, 0.6, 0.1]
    lines = [
        {
            "prompt": f"question {i}",
            "labels": {"small": w, "big": s},
            "tokens": {"small": {"in": 1000, "out": 0}, "big": {"in": 1000, "out": 0}},
        }
        for i, (w, s) in enumerate(zip(weak, strong, strict=True))
    ]
    examples = data.examples(lines)
    report = evaluate.evaluate(cfg, examples, lambda i, _ex: {"small": chances[i]})
    assert report["weakest"] == "small" and report["strongest"] == "big"
    assert report["always"]["small"]["quality"] == 0.5
    assert report["always"]["big"]["quality"] == 0.75
    assert report["always"]["big"]["cost_usd"] == pytest.approx(0.004)
    assert report["learned"]["apgr"] == pytest.approx(0.375)
    assert report["learned"]["reach_50"]["x"] == pytest.approx(0.625)
    assert report["learned"]["reach_80"]["x"] == pytest.approx(0.7)
    assert report["oracle"]["apgr"] == pytest.approx(0.875)
    assert report["oracle"]["point"]["x"] == pytest.approx(0.25)
    assert report["random"]["apgr"] == 0.5
    # the operating point at quality_bias 0.5: small for 0.9 and 0.6
    op = report["operating_point"]
    assert op["share"] == {"big": 0.5, "small": 0.5}
    assert op["quality"] == 0.5 and op["pgr"] == 0.0 and op["x"] == pytest.approx(0.5)
    assert report["ladder"]["share"] == {"small": 1.0}  # easy prompts: the basic model


def test_eval_refuses_unusable_files(tmp_path: Path, write_config: Any) -> None:
    cfg = write_config(MODELS.replace("{url}", "http://127.0.0.1:9"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "a", "labels": {"small": 1, "big": 1}}\n'
        '{"prompt": "b", "labels": {"small": 2}}\n'
    )
    result = CliRunner().invoke(app, ["eval", str(bad), "-c", str(cfg)])
    assert result.exit_code == 2
    assert (
        f"{bad}:2:" in result.output and 'labels["small"] must be a number in 0..1' in result.output
    )
    one = tmp_path / "one.jsonl"
    one.write_text('{"prompt": "a", "labels": {"small": 1, "gpt9": 1}}\n')
    result = CliRunner().invoke(app, ["eval", str(one), "-c", str(cfg)])
    assert result.exit_code == 2 and "at least two of the config's models" in result.output
    assert "Traceback" not in result.output


def synthetic(n: int, seed: int = 1) -> list[dict[str, Any]]:
    """Prompts on two kinds of topic: the small model is usually right on one, wrong on the
    other; the big one usually right on both."""
    import random

    r = random.Random(seed)
    out = []
    for _ in range(n):
        hard = r.random() < 0.4
        topic = r.choice(
            ["integral", "theorem", "entropy"] if hard else ["capital", "river", "color"]
        )
        small = int(r.random() < (0.25 if hard else 0.9))
        out.append(
            {
                "prompt": f"a question about the {topic} here",
                "labels": {"small": small, "big": int(r.random() < 0.95)},
            }
        )
    return out


def test_eval_cross_validation_beats_random_and_plots(tmp_path: Path, write_config: Any) -> None:
    cfg = write_config(MODELS.replace("{url}", "http://127.0.0.1:9"))
    file = tmp_path / "labelled.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in synthetic(300)))
    plot = tmp_path / "curve.svg"
    result = CliRunner().invoke(
        app, ["eval", str(file), "--cv", "3", "--plot", str(plot), "--json", "-c", str(cfg)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # each fold routed at the threshold the other folds' held-out chances pick
    assert report["learned_from"] == (
        "3-fold cross-validation, each fold's threshold from the other folds"
    )
    assert len(report["quality_bias_per_fold"]) >= 1
    assert report["learned"]["apgr"] > 0.65  # random is 0.5 on the same curve
    assert report["learned"]["apgr"] <= report["oracle"]["apgr"] + 1e-9
    assert plot.read_text().lstrip().startswith("<?xml") and "<svg" in plot.read_text()
    text = CliRunner().invoke(app, ["eval", str(file), "-c", str(cfg)]).output
    assert "no learned router to sweep" in text and "difficulty ladder (v0.1)" in text


def test_learn_says_how_many_labels_it_needs(tmp_path: Path, write_config: Any) -> None:
    cfg = write_config(
        MODELS.replace("{url}", "http://127.0.0.1:9") + f'[ledger]\npath = "{tmp_path / "l.db"}"\n'
    )
    file = tmp_path / "few.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in synthetic(30)))
    result = CliRunner().invoke(app, ["learn", "--labels", str(file), "-c", str(cfg)])
    assert result.exit_code == 1
    assert "too few labels to learn: 30 labelled requests" in result.output
    assert "needs 20 more labels" in result.output
    assert not (tmp_path / "learned.json").exists()
    file.write_text("".join(json.dumps(line) + "\n" for line in synthetic(120)))
    result = CliRunner().invoke(app, ["learn", "--labels", str(file), "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    scorer = learned.load(tmp_path / "learned.json")
    assert scorer is not None and scorer.models["small"].weights is not None
    # where it will route, on held-out labels, at the default quality_target
    assert "at quality_target 0.95 (held-out labels): the strongest model takes " in result.output
    assert scorer.calibration and scorer.calibration[-1][1] == 1.0
    big = scorer.models["big"]  # too few bad answers to learn from: its rate only
    assert big.weights is None and scorer.chance("big", []) == big.good / big.labels
    easy = learned.text_ids("a question about the river here", ())
    hard = learned.text_ids("a question about the entropy here", ())
    p_easy, p_hard = scorer.chance("small", easy), scorer.chance("small", hard)
    assert p_easy is not None and p_hard is not None
    assert p_easy > 0.6 and p_hard < 0.4
    # eval on the very prompts it was trained on cross-validates, and says why
    result = CliRunner().invoke(app, ["eval", str(file), "--json", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    source = json.loads(result.stdout)["learned_from"]
    assert source.startswith("5-fold cross-validation: the learned model at ") and "100%" in source
    # held-out prompts (other words) score the model itself
    unseen = [
        {**line, "prompt": line["prompt"].replace("question", "query") + " please"}
        for line in synthetic(60, seed=9)
    ]
    held_out = tmp_path / "held-out.jsonl"
    held_out.write_text("".join(json.dumps(line) + "\n" for line in unseen))
    result = CliRunner().invoke(app, ["eval", str(held_out), "--json", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["learned_from"] == str(tmp_path / "learned.json")


def test_the_daemon_never_imports_the_training_library() -> None:
    code = (
        "import sys; import pirouter_py.server.serve, pirouter_py.cli.daemon;"
        "heavy = ('sklearn', 'scipy', 'numpy', 'matplotlib');"
        "print([m for m in sys.modules if m.split('.')[0] in heavy])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def rows(book: Path) -> int:
    if not book.exists():
        return 0
    db = sqlite3.connect(book)
    try:
        return int(db.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def ask(daemon: Daemon, text: str) -> dict[str, str]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    status, headers, _ = daemon.post(body)
    assert status == 200
    return headers


def test_feedback_over_http_changes_what_learn_produces(fake: FakeUpstream, tmp_path: Path) -> None:
    """A daemon with [routing] learned on from the start (and the prior off) routes by the
    ladder (no model yet) while it keeps each request's features. Requests answered by the small
    model, then bad feedback on the poem ones: before the feedback `learn` has nothing to learn
    (every answer good); after it, the small model is predicted bad for poems, and the running
    daemon picks the new model up by itself and sends a poem to the big model and the weather to
    the small one. No prompt text is kept: `learn` reads the features."""
    fake.reset()
    book = tmp_path / "ledger.db"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        MODELS.replace("{url}", fake.url)
        + f'[ledger]\npath = "{book}"\n[routing]\nlearned = true\nquality_bias = 0.5\n'
        + "prior = false\n"  # the owner's labels alone: the ladder until a model is learned
    )
    daemon = Daemon(cfg).start()
    try:
        poems = []
        for i in range(60):
            topic = "poem" if i % 3 == 0 else "weather"
            headers = ask(daemon, f"tell me about the {topic} number {i}")
            assert (headers["x-pirouter-model"], headers["x-pirouter-rule"]) == (
                "small",
                "policy:balanced:easy",  # no model yet: the ladder
            )
            if topic == "poem":
                poems.append(headers["x-pirouter-request-id"])
        deadline = time.monotonic() + 10  # the ledger writes in batches
        while rows(book) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        runner = CliRunner()
        before = runner.invoke(app, ["learn", "--json", "-c", str(cfg)])
        assert before.exit_code == 1
        assert json.loads(before.stdout)["models"]["small"] == {
            "labels": 60,
            "good": 60,
            "learned": False,
            "missing": "5 more escalated or bad answers",
        }
        for rid in poems:
            status, _, _ = daemon.post({"request_id": rid, "score": "bad"}, "/v1/feedback")
            assert status == 200
        db = sqlite3.connect(book)
        assert db.execute("SELECT count(*) FROM prompts").fetchone()[0] == 0
        kept = db.execute("SELECT count(*) FROM requests WHERE features IS NOT NULL")
        assert kept.fetchone()[0] == 60
        db.close()
        after = runner.invoke(app, ["learn", "--json", "-c", str(cfg)])
        assert after.exit_code == 0, after.output
        assert json.loads(after.stdout)["models"]["small"]["good"] == 40
        deadline = time.monotonic() + 10  # the daemon notices the new file within seconds
        while time.monotonic() < deadline:
            headers = ask(daemon, "tell me about the poem number 99")
            if headers["x-pirouter-rule"] == "policy:balanced:learned":
                break
            time.sleep(0.2)
        assert (headers["x-pirouter-model"], headers["x-pirouter-rule"]) == (
            "big",
            "policy:balanced:learned",
        )
        headers = ask(daemon, "tell me about the weather number 99")
        assert (headers["x-pirouter-model"], headers["x-pirouter-rule"]) == (
            "small",
            "policy:balanced:learned",
        )
        # route --prompt and route --batch decide as the daemon did: with the learned model
        texts = ("tell me about the poem number 99", "tell me about the weather number 99")
        batch = tmp_path / "batch.jsonl"
        batch.write_text(
            "".join(
                json.dumps({"model": "auto", "messages": [{"role": "user", "content": t}]}) + "\n"
                for t in texts
            )
        )
        routed = runner.invoke(app, ["route", "--batch", str(batch), "-c", str(cfg)])
        assert routed.exit_code == 0, routed.output
        decided = [json.loads(line) for line in routed.stdout.splitlines()]
        for text, line, model in zip(texts, decided, ("big", "small"), strict=True):
            one = runner.invoke(app, ["route", "--prompt", text, "--json", "-c", str(cfg)])
            assert one.exit_code == 0, one.output
            alone = json.loads(one.stdout)
            assert (line["rule"], line["primary"]) == (alone["rule"], alone["primary"])
            assert (line["rule"], line["primary"]) == ("policy:balanced:learned", model)
    finally:
        daemon.stop()
    assert any("learned_model_missing" in line for line in daemon.stderr)
    assert any("learned_model_loaded" in line for line in daemon.stderr)


def test_features_are_kept_only_while_learning(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset()
    for extra, kept in (("", 0), ("[learning]\nkeep_features = true\n", 1)):
        book = tmp_path / f"ledger{kept}.db"
        cfg = tmp_path / "config.toml"
        cfg.write_text(MODELS.replace("{url}", fake.url) + f'[ledger]\npath = "{book}"\n' + extra)
        daemon = Daemon(cfg).start()
        try:
            ask(daemon, "hello there")
        finally:
            daemon.stop()
        db = sqlite3.connect(book)
        found = db.execute("SELECT features FROM requests").fetchall()
        db.close()
        assert len(found) == 1 and (found[0][0] is not None) == bool(kept)


def test_learn_names_the_switch_for_traffic_it_cannot_use(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pirouter_py.cli import learning as learn_cli

    report = {"labels": 0, "without_features": 16, "models": {}, "label_sources": {}}
    learn_cli._print_counts(report)
    out = capsys.readouterr().out
    assert "16 more without text or features" in out
    assert "[learning] keep_features" in out and "config set learning.keep_features true" in out


def test_learn_without_the_extra_says_how_to_install_it_from_this_checkout(
    tmp_path: Path, write_config: Any
) -> None:
    cfg = write_config(MODELS.replace("{url}", "http://127.0.0.1:9"))
    file = tmp_path / "labels.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in synthetic(60)))
    code = (
        "import sys; sys.modules['sklearn'] = sys.modules['scipy'] = None;"  # as if not installed
        "from pirouter_py.cli import main; main()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "learn", "--labels", str(file), "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1, out
    assert f"install -e '{ROOT}[learn]'" in out.stderr
    assert "Traceback" not in out.stderr
