"""The shipped day-one prior: its manifest of training prompts is well-formed and shares no prompt
with a held-out set, the model file loads as the daemon loads a learned model, its calibration
is monotone, and SOURCES.md names every set it was trained on."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from pirouter_py.routing import learned

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "pirouter_py" / "routing" / "prior_data"
HELDOUT = ROOT / "bench" / "prior" / "heldout.sha256.gz"
LINE = re.compile(r"[0-9a-f]{64} [a-z0-9][a-z0-9-]*")


def _lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode().splitlines()


def _hashes(lines: list[str]) -> set[str]:
    return {line.split(" ", 1)[0] for line in lines}


@pytest.fixture(scope="module")
def manifest() -> list[str]:
    return _lines(PRIOR / "manifest.txt.gz")


@pytest.fixture(scope="module")
def prior() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(gzip.decompress((PRIOR / "prior.json.gz").read_bytes()))
    return data


def test_manifest_lines_are_hash_and_set_sorted_unique(manifest: list[str]) -> None:
    assert len(manifest) > 1_000
    bad = [line for line in manifest if not LINE.fullmatch(line)]
    assert not bad, bad[:3]
    assert manifest == sorted(set(manifest))
    assert len(_hashes(manifest)) == len(manifest)  # one set per prompt


def test_no_heldout_prompt_was_trained_on(manifest: list[str]) -> None:
    heldout = _lines(HELDOUT)
    assert len(heldout) > 1_000 and all(LINE.fullmatch(line) for line in heldout)
    shared = _hashes(manifest) & _hashes(heldout)
    assert not shared, sorted(shared)[:3]
    trained = {line.split(" ", 1)[1] for line in manifest}
    held = {line.split(" ", 1)[1] for line in heldout}
    assert not trained & held


def test_prior_loads_as_a_learned_model(prior: dict[str, Any], tmp_path: Path) -> None:
    assert prior["version"] == learned.VERSION and prior["buckets"] == learned.BUCKETS
    assert set(prior["models"]) == {"weak", "strong"}
    assert "trained_on" not in prior
    path = tmp_path / learned.FILE_NAME
    path.write_bytes(orjson.dumps(prior))
    scorer = learned.load(path)
    assert scorer is not None and scorer.trained
    assert scorer.models["weak"].weights is not None
    chances = scorer.chances(learned.text_ids("What is 2 + 2?"))
    assert set(chances) == {"weak", "strong"} and all(0 < p < 1 for p in chances.values())


def test_calibration_is_monotone_and_spans_the_curve(prior: dict[str, Any]) -> None:
    points = prior["calibration"]
    assert 20 <= len(points) <= 200
    biases = [p["quality_bias"] for p in points]
    shares = [p["strong_share"] for p in points]
    assert biases == sorted(biases) and len(set(biases)) == len(biases)
    assert shares == sorted(shares)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert points[-1]["quality_share"] == pytest.approx(1.0)
    assert all(0 < p["quality_share"] <= 1.2 for p in points)


def test_sources_name_every_set(manifest: list[str], prior: dict[str, Any]) -> None:
    sources = (PRIOR / "SOURCES.md").read_text()
    trained = {line.split(" ", 1)[1] for line in manifest}
    assert trained == set(prior["sources"])
    missing = [name for name in trained if f"`{name}`" not in sources]
    assert not missing
    held = {line.split(" ", 1)[1] for line in _lines(HELDOUT)} - {"routerbench-cluster"}
    assert not [name for name in held if f"`{name}`" not in sources]


def test_the_shipped_files_stay_small() -> None:
    sizes = {p.name: p.stat().st_size for p in PRIOR.glob("*.gz")}
    assert set(sizes) == {"prior.json.gz", "manifest.txt.gz"}
    assert sum(sizes.values()) < 3_000_000


def _digest(prompt: str) -> str:
    """The manifests' hash: sha256 of the lower-cased prompt, whitespace runs as one space."""
    return hashlib.sha256(" ".join(prompt.lower().split()).encode()).hexdigest()


def test_hashes_are_of_the_normalised_prompt(manifest: list[str]) -> None:
    gsm8k = (
        "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and "
        "bakes muffins for her friends every day with four. She sells the remainder at the "
        "farmers' market daily for $2 per fresh duck egg. How much in dollars does she make "
        "every day at the farmers' market?"
    )
    assert f"{_digest(gsm8k)} routellm-gsm8k" in manifest
    shouted = "  " + gsm8k.upper().replace(" ", " \t ") + "\n"
    assert _digest(shouted) == _digest(gsm8k)
    mbpp = "Write a python function to identify non-prime numbers."
    assert f"{_digest(mbpp)} routerbench-mbpp" in _lines(HELDOUT)
