"""`python bench/decide.py CONFIG`: the routing decision's own time, in process, at three prompt
sizes (1 KB, 24 KB, 1 MB of user text), as JSON: p50 and p99 in microseconds over 2,000 calls;
then the same with the learned router on (`learned <size>`: a model for every alias, random
weights, so every decision reads the features and scores every cheaper candidate), with the
shipped prior alone (`prior <size>`: a new user's router) and with both blended
(`learned+prior <size>`)."""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from array import array
from pathlib import Path

from pirouter_py.config import Config, load_config
from pirouter_py.errors import RoutingError
from pirouter_py.routing import learned, prior
from pirouter_py.routing.decide import decide
from pirouter_py.types import ChatRequest, text_message

SIZES = {"1kb": 1_000, "24kb": 24_000, "1mb": 1_000_000}
CALLS = 2_000


def random_scorer(config: Config) -> learned.Scorer:
    rng = random.Random(0)
    models = {}
    for alias in config.aliases:
        weights = array("f", (rng.gauss(0, 0.1) for _ in range(learned.BUCKETS)))
        models[alias] = learned.AliasModel(0.0, weights, 100, 50)
    return learned.Scorer(models, 0.0, 100)


def main() -> None:
    config = load_config(Path(sys.argv[1])).config
    routing = config.routing.model_copy(update={"learned": True})
    learned_config = config.model_copy(update={"routing": routing})
    scorer = random_scorer(config)
    # varied words, as a prompt has (a repeated sentence would hash few distinct pairs)
    rng = random.Random(1)
    vocab = [f"w{rng.randrange(50_000)}" for _ in range(5_000)]
    shipped = prior.load_prior()
    routers = {
        "": None,
        "learned ": prior.router(learned_config, scorer, None),
        "prior ": prior.router(learned_config, None, shipped),
        "learned+prior ": prior.router(learned_config, scorer, shipped),
    }
    out = {}
    for label, router in routers.items():
        for name, size in SIZES.items():
            text = " ".join(rng.choice(vocab) for _ in range(size // 5))[:size]
            request = ChatRequest("auto", (text_message("user", text),))
            times = []
            for _ in range(CALLS):
                started = time.perf_counter()
                with contextlib.suppress(RoutingError):  # no window takes 1 MB: decided anyway
                    if router is not None:
                        decide(learned_config, request, {}, scorer=router)
                    else:
                        decide(config, request, {})
                times.append((time.perf_counter() - started) * 1e6)
            times.sort()
            out[f"{label}{name}"] = {
                "p50_us": times[CALLS // 2],
                "p99_us": times[int(CALLS * 0.99)],
            }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
