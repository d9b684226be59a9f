"""`python -m bench.prior.sets`: the labelled public sets behind the day-one prior, read from
git mirrors of their repositories into uniform JSON lines under OUT (default /work/prior-data):
one file per set, lines `{"set", "prompt", "weak", "strong"}` with scores in 0..1.

Training sets (RouteLLM, Apache-2.0): GSM8K and MMLU (weak Mixtral-8x7B-Instruct, strong
gpt-4-1106-preview, correct 1 / wrong 0) and MT-Bench turn 1 (the same pair, GPT-4 judge score
1-10: 1 at 8 or above, else 0). Optional training sets (RouterDC, no licence in its repository,
so not in the shipped prior unless asked for): seven 7-8B models' scores, weak Mistral-7B-v0.1,
strong dolphin-2.9-llama3-8b. Held out (never trained or tuned on): RouterBench's ARC-Challenge,
MBPP and Winogrande as RouterDC keeps them (weak mixtral-8x7b-chat, strong gpt-4-1106-preview)
and RouterArena's cached answers (weak claude-3-haiku, strong gemini-2.0-flash).

Prompts are deduplicated by their normalised form (lower-case, whitespace runs as one space,
stripped): within a set, repeats' scores are averaged; across sets, the first set (in SETS
order: held-out sets first) keeps it, so no training prompt equals a held-out one.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pirouter_py.routing import prior

OUT = Path(os.environ.get("PRIOR_DATA", "/work/prior-data"))
MIRRORS = {
    "routellm": os.environ.get("PRIOR_ROUTELLM", "/work/.mirror/lm-sys+RouteLLM/repo"),
    "routerdc": os.environ.get("PRIOR_ROUTERDC", "/work/.mirror/shuhao02+RouterDC/repo"),
    "routerarena": os.environ.get("PRIOR_ROUTERARENA", "/work/.mirror/RouteWorks+RouterArena/repo"),
}
MT_BENCH_GOOD = 8  # a GPT-4 judge score (1-10) at or above this is "good enough"
ROUTELLM_WEAK, ROUTELLM_STRONG = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
ROUTERDC_WEAK = "mistralai/Mistral-7B-v0.1"
ROUTERDC_STRONG = "cognitivecomputations/dolphin-2.9-llama3-8b"
BENCH_WEAK, BENCH_STRONG = "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"
ARENA_WEAK = "cached_results/claude-3-haiku-20240307.jsonl"
ARENA_STRONG = "cached_results/gemini-2.0-flash-001.jsonl"

Rows = Iterator[tuple[str, float, float]]


# a prompt's normalised form and its sha256 hex, as the shipped manifest lists them (the
# daemon's `eval` compares with the same functions)
normalise = prior.normalised
digest = prior.prompt_digest


class Mirror:
    """A bare git mirror read at HEAD."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", f"--git-dir={self.path}", *args], capture_output=True, text=True, check=True
        ).stdout

    @property
    def commit(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def files(self, under: str) -> list[str]:
        return self._git("ls-tree", "-r", "--name-only", "HEAD", under).split()

    def text(self, path: str) -> str:
        return self._git("show", f"HEAD:{path}")


def _csv(text: str) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    return list(csv.DictReader(io.StringIO(text)))


def _truth(value: str) -> float:
    return 1.0 if value.strip().lower() in ("true", "1", "1.0") else 0.0


def routellm_gsm8k(m: Mirror) -> Rows:
    for row in _csv(m.text("routellm/evals/gsm8k/gsm8k_responses.csv")):
        yield row["prompt"], _truth(row[ROUTELLM_WEAK]), _truth(row[ROUTELLM_STRONG])


def routellm_mmlu(m: Mirror) -> Rows:
    for path in m.files("routellm/evals/mmlu/responses/"):
        for row in _csv(m.text(path)):
            yield row["prompt"], _truth(row[ROUTELLM_WEAK]), _truth(row[ROUTELLM_STRONG])


def routellm_mtbench(m: Mirror) -> Rows:
    questions = {}
    for line in m.text("routellm/evals/mt_bench/question.jsonl").splitlines():
        q = json.loads(line)
        questions[q["question_id"]] = q["turns"][0]
    scores: dict[tuple[int, str], float] = {}
    for line in m.text("routellm/evals/mt_bench/judgements.jsonl").splitlines():
        j = json.loads(line)
        if j["turn"] == 1 and j["score"] >= 1:  # -1: the judge gave no rating
            scores[(j["question_id"], j["model"])] = float(j["score"] >= MT_BENCH_GOOD)
    for qid, prompt in sorted(questions.items()):
        weak, strong = scores.get((qid, ROUTELLM_WEAK)), scores.get((qid, ROUTELLM_STRONG))
        if weak is not None and strong is not None:
            yield prompt, weak, strong


def _routerdc(*names: str) -> Callable[[Mirror], Rows]:
    def rows(m: Mirror) -> Rows:
        for name in names:
            for item in json.loads(m.text(f"datasets/split2_model7/{name}")):
                s = item["scores"]
                yield item["question"], float(s[ROUTERDC_WEAK]), float(s[ROUTERDC_STRONG])

    return rows


def _bench_prompt(raw: str) -> str:
    """RouterBench keeps a prompt as a Python list literal of its parts."""
    try:
        parts = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    return "\n".join(map(str, parts)) if isinstance(parts, list) else str(parts)


def _routerbench(name: str) -> Callable[[Mirror], Rows]:
    def rows(m: Mirror) -> Rows:
        for split in ("test", "train"):
            for row in _csv(m.text(f"datasets/routerbench_zs/{name}_{split}.csv")):
                weak, strong = row[BENCH_WEAK].strip(), row[BENCH_STRONG].strip()
                if weak and strong:  # a few rows lack a model's score
                    yield _bench_prompt(row["prompt"]), float(weak), float(strong)

    return rows


def _arena_scores(m: Mirror, path: str) -> dict[str, tuple[str, float]]:
    out = {}
    for line in m.text(path).splitlines():
        row = json.loads(line)
        result = row.get("evaluation_result")
        try:
            found = ast.literal_eval(result) if isinstance(result, str) else result
            score = float(found["score"])
        except (ValueError, SyntaxError, KeyError, TypeError):
            continue
        if 0.0 <= score <= 1.0:
            out[row["global_index"]] = (row["question"], score)
    return out


def routerarena(m: Mirror) -> Rows:
    weak, strong = _arena_scores(m, ARENA_WEAK), _arena_scores(m, ARENA_STRONG)
    for key in sorted(weak.keys() & strong.keys()):
        yield weak[key][0], weak[key][1], strong[key][1]


# name: (repo key, reader, role); held-out first: a prompt they hold never trains
SETS: dict[str, tuple[str, Callable[[Mirror], Rows], str]] = {
    "routerbench-arc-challenge": ("routerdc", _routerbench("arc_challenge"), "heldout"),
    "routerbench-mbpp": ("routerdc", _routerbench("mbpp"), "heldout"),
    "routerbench-winogrande": ("routerdc", _routerbench("winograde"), "heldout"),
    "routerarena": ("routerarena", routerarena, "heldout"),
    "routellm-gsm8k": ("routellm", routellm_gsm8k, "train"),
    "routellm-mmlu": ("routellm", routellm_mmlu, "train"),
    "routellm-mtbench": ("routellm", routellm_mtbench, "train"),
    "routerdc-gsm8k": ("routerdc", _routerdc("gsm8k-train.json", "gsm8k-test.json"), "extra"),
    "routerdc-mmlu": ("routerdc", _routerdc("mmlu_train.json", "mmlu_test.json"), "extra"),
    "routerdc-math": ("routerdc", _routerdc("MATH_prealgebra.json"), "extra"),
    "routerdc-arc-easy": (
        "routerdc",
        _routerdc("arc_easy_train.json", "arc_easy_test.json"),
        "extra",
    ),
    "routerdc-code": (
        "routerdc",
        _routerdc("humaneval_train.json", "humaneval_test.json", "javascript.json"),
        "extra",
    ),
}
# more held-out prompts (RouterBench's clustered copies): hashed so nothing equal to them trains
HELDOUT_ONLY_HASHED = [
    "datasets/routerbench_cluster/arc_challenge_train.csv",
    "datasets/routerbench_cluster/mbpp_train.csv",
    "datasets/routerbench_cluster/winograde_train.csv",
]


def build(out: Path, mirrors: dict[str, str]) -> dict[str, Any]:
    """Write one JSON-lines file per set and `sets.json` (counts, commits); return the latter."""
    out.mkdir(parents=True, exist_ok=True)
    repos = {key: Mirror(path) for key, path in mirrors.items()}
    taken: set[str] = set()  # normalised prompts some earlier set holds
    heldout_extra = set()
    for path in HELDOUT_ONLY_HASHED:
        for row in _csv(repos["routerdc"].text(path)):
            heldout_extra.add(normalise(_bench_prompt(row["prompt"])))
    meta: dict[str, Any] = {"commits": {k: m.commit for k, m in repos.items()}, "sets": {}}
    for name, (repo, reader, role) in SETS.items():
        merged: dict[str, list[Any]] = {}  # normalised -> [prompt, weak sum, strong sum, n]
        read = 0
        for prompt, weak, strong in reader(repos[repo]):
            read += 1
            key = normalise(prompt)
            if not key:
                continue
            entry = merged.setdefault(key, [prompt, 0.0, 0.0, 0])
            entry[1] += weak
            entry[2] += strong
            entry[3] += 1
        dropped = [k for k in merged if k in taken or (role != "heldout" and k in heldout_extra)]
        for key in dropped:
            del merged[key]
        taken.update(merged)
        lines = [
            {"set": name, "prompt": p, "weak": round(w / n, 4), "strong": round(s / n, 4)}
            for p, w, s, n in merged.values()
        ]
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        meta["sets"][name] = {
            "role": role,
            "repo": repo,
            "rows_read": read,
            "prompts": len(lines),
            "dropped_as_seen": len(dropped),
            "weak_mean": round(sum(x["weak"] for x in lines) / max(1, len(lines)), 4),
            "strong_mean": round(sum(x["strong"] for x in lines) / max(1, len(lines)), 4),
        }
        print(name, meta["sets"][name], file=sys.stderr)
    meta["heldout_extra_hashed"] = len(heldout_extra)
    (out / "sets.json").write_text(json.dumps(meta, indent=2) + "\n")
    heldout = sorted(
        {
            f"{digest(json.loads(line)['prompt'])} {name}"
            for name, (_, _, role) in SETS.items()
            if role == "heldout"
            for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
            if line
        }
        | {f"{digest(k)} routerbench-cluster" for k in heldout_extra}
    )
    (out / "heldout.sha256").write_text("\n".join(heldout) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    for key, path in MIRRORS.items():
        parser.add_argument(f"--{key}", default=path, help=f"git dir of the {key} mirror")
    args = parser.parse_args()
    build(args.out, {key: getattr(args, key) for key in MIRRORS})


if __name__ == "__main__":
    main()
