"""The learned router's inference: request features, and the weights `pirouter learn` wrote.

A request becomes a set of hashed feature ids: the words and word pairs of its latest instruction
(lower-cased, its first and last LEARN_CHARS/2 characters), and what the router already knows of
it (turn kind, tools, images, effort, size bucket, messages bucket, a system prompt). Ids come
from the CRC-32 of each word or feature's text (a pair mixes its two words'), modulo BUCKETS:
stable across processes and machines, so the ledger keeps them (without the text) for
training, and `learn`, `eval` and the daemon agree on them.

A model file holds, per alias, a logistic regression over those ids (each request's ids weigh
1/sqrt(count), so long and short prompts score on one scale): the chance that alias's answer to
the request is good enough. Weights are dense float32 arrays (BUCKETS * 4 bytes per alias); a
score is a sum over the request's ids. An alias with labels too few or too uniform to learn from
keeps only its rate of good answers (no weights): its chance is that rate for every request.
Standard library only: the daemon never imports the training library.
"""

from __future__ import annotations

import base64
import itertools
import math
import re
import sys
import zlib
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from pirouter_py.errors import PirouterError
from pirouter_py.routing.features import Features, instruction
from pirouter_py.types import ChatRequest, frozen

VERSION = 2  # 2: rows weigh 1/sqrt(ids), rate-only aliases
BUCKETS = 1 << 18  # hashed feature space
LEARN_CHARS = 1_200  # instruction text read: its first and last LEARN_CHARS/2 characters
MAX_IDS = 256  # at most this many distinct ids are kept per request
FILE_NAME = "learned.json"  # beside the ledger, in the data directory
PAIR_MIX = 0x9E3779B1  # a word pair's id: (hash(first) * PAIR_MIX) ^ hash(second), mod BUCKETS
_WORD = re.compile(r"[a-z0-9]+")
META_KEYS = ("turn", "tools", "images", "effort", "tokens", "messages", "system")
META_CACHE = 4_096  # distinct request kinds whose meta feature ids are kept
_META_NAMES: dict[tuple[object, ...], tuple[str, ...]] = {}
_META_IDS: dict[tuple[str, ...], frozenset[int]] = {}


def _bounded(text: str) -> str:
    if len(text) <= LEARN_CHARS:
        return text
    half = LEARN_CHARS // 2
    return text[:half] + " " + text[-half:]


def _bucket(token: str) -> int:
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) & (BUCKETS - 1)


def _size_bucket(n: int) -> int:
    return max(0, n).bit_length()  # 0, 1, 2-3, 4-7, ... : a log2 scale


def _fixed_ids(meta: tuple[str, ...]) -> frozenset[int]:
    """Ids of the constant feature and of `meta` (few distinct tuples: kept once computed)."""
    found = _META_IDS.get(meta)
    if found is None:
        mask = BUCKETS - 1
        found = frozenset(zlib.crc32(m.encode("utf-8", "surrogatepass")) & mask for m in meta)
        if len(_META_IDS) >= META_CACHE:
            _META_IDS.clear()
        _META_IDS[meta] = found
    return found


def text_ids(text: str, meta: tuple[str, ...] = ()) -> list[int]:
    """Sorted distinct ids of the constant feature, of `meta` features (always kept) and of a
    text's words and word pairs in the order they occur, up to MAX_IDS in all: a long text
    keeps its first words, not a hash-ordered subset of them."""
    words = _WORD.findall(_bounded(text).lower())
    crc, mask = zlib.crc32, BUCKETS - 1
    hashed = {w: crc(w.encode()) for w in set(words)}  # each distinct word hashed once
    ids = set(_fixed_ids(("bias", *meta)))
    seq = [hashed[w] for w in words]
    # each word, then the pair it closes: a pair's id mixes its words' hashes (no string made)
    ordered = itertools.chain.from_iterable(
        (b & mask, ((a * PAIR_MIX) ^ b) & mask) for a, b in itertools.pairwise(seq)
    )
    for found in itertools.chain((seq[0] & mask,) if seq else (), ordered):
        if len(ids) >= MAX_IDS:
            break
        ids.add(found)
    return sorted(ids)


def request_ids(request: ChatRequest, features: Features) -> list[int]:
    """The feature ids of a request (what the ledger keeps, what the scorer reads)."""
    meta = (
        features.turn,
        features.has_tools,
        features.has_images,
        features.effort,
        _size_bucket(features.estimated_tokens),
        _size_bucket(len(request.messages)),
        bool(features.system_text),
    )
    named = _META_NAMES.get(meta)
    if named is None:
        named = tuple(f"~{k}:{v}" for k, v in zip(META_KEYS, meta, strict=True))
        if len(_META_NAMES) >= META_CACHE:
            _META_NAMES.clear()
        _META_NAMES[meta] = named
    return text_ids(instruction(request), named)


def encode_ids(ids: list[int]) -> str:
    """Ids as the ledger keeps them: 3 little-endian bytes each (BUCKETS fits), base64."""
    return base64.b64encode(b"".join(i.to_bytes(3, "little") for i in ids)).decode()


def decode_ids(text: str | None) -> list[int] | None:
    """The ids `encode_ids` wrote; None for nothing or something else."""
    if not text:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        return None
    if len(raw) % 3:
        return None
    return [int.from_bytes(raw[i : i + 3], "little") for i in range(0, len(raw), 3)]


@frozen
class AliasModel:
    bias: float
    weights: array[float] | None  # float32 of BUCKETS; None: the rate of good answers only
    labels: int  # labels it was trained on
    good: int  # of which good enough


Calibration = tuple[tuple[float, float, float], ...]  # (quality_bias, strong share, quality share)


@frozen
class Scorer:
    """The trained per-alias models (`pirouter learn`'s file, or the shipped prior's tiers)."""

    models: dict[str, AliasModel]
    trained_at: float
    labels: int
    # held-out routing at each quality_bias (cross-validated labels), cheapest first: what a
    # [routing] quality_target is turned into; empty in a file of an older pirouter
    calibration: Calibration = ()

    @property
    def trained(self) -> bool:
        """Does any alias have weights (not only its rate)?"""
        return any(m.weights is not None for m in self.models.values())

    def chance(self, alias: str, ids: list[int]) -> float | None:
        """The chance that `alias` answers this request well enough, or None when no model
        was trained for it."""
        model = self.models.get(alias)
        if model is None:
            return None
        if model.weights is None:
            return model.good / model.labels if model.labels else None
        if not ids:
            return None
        z = model.bias + sum(map(model.weights.__getitem__, ids)) / math.sqrt(len(ids))
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def chances(self, ids: list[int]) -> dict[str, float]:
        return {alias: p for alias in self.models if (p := self.chance(alias, ids)) is not None}

    def lazy(self, ids: list[int]) -> Chances:
        """The chances, each computed when the policy first asks for it (it stops at the first
        cheap model good enough)."""
        return Chances(self, ids)


class Chances(Mapping[str, float]):
    """Each alias's chance for one request, computed on first use."""

    __slots__ = ("_done", "_ids", "_scorer")

    def __init__(self, scorer: Scorer, ids: list[int]) -> None:
        self._scorer, self._ids = scorer, ids
        self._done: dict[str, float] = {}

    def __getitem__(self, alias: str) -> float:
        found = self._done.get(alias)
        if found is None:
            chance = self._scorer.chance(alias, self._ids)
            if chance is None:
                raise KeyError(alias)
            found = self._done[alias] = chance
        return found

    def __contains__(self, alias: object) -> bool:
        return alias in self._scorer.models

    def __iter__(self) -> Iterator[str]:
        return iter(self._scorer.models)

    def __len__(self) -> int:
        return len(self._scorer.models)


def pack(weights: list[float] | Any) -> str:
    """Dense weights as base64 of little-endian float32."""
    buf = array("f", weights)
    if sys.byteorder != "little":
        buf.byteswap()
    return base64.b64encode(buf.tobytes()).decode()


def _unpack(text: str) -> array[float]:
    buf = array("f")
    buf.frombytes(base64.b64decode(text, validate=True))
    if sys.byteorder != "little":
        buf.byteswap()
    if len(buf) != BUCKETS:
        raise ValueError(f"{len(buf)} weights, expected {BUCKETS}")
    return buf


def load(path: Path) -> Scorer | None:
    """The scorer in `path`, None when there is no such file; PirouterError when it is unreadable
    (the daemon then routes without it and says why)."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise PirouterError(
            f"{path}: cannot read the learned model ({exc}); run `pirouter learn`"
        ) from None
    return parse(data, path)


def calibration(points: Any) -> Calibration:
    """A file's calibration points, sorted by quality_bias ([] or absent: none)."""
    return tuple(
        sorted(
            (float(p["quality_bias"]), float(p["strong_share"]), float(p["quality_share"]))
            for p in points or ()
        )
    )


def parse(data: Any, path: Path) -> Scorer:
    """A scorer from a model file's JSON; PirouterError names `path` when it is not one."""
    try:
        if data.get("version") != VERSION or data.get("buckets") != BUCKETS:
            raise ValueError(f"version {data.get('version')}, written by another pirouter")
        models = {
            alias: AliasModel(
                float(m["bias"]),
                None if m["weights"] is None else _unpack(m["weights"]),
                int(m["labels"]),
                int(m["good"]),
            )
            for alias, m in data["models"].items()
        }
        return Scorer(
            models,
            float(data["trained_at"]),
            int(data["labels"]),
            calibration(data.get("calibration")),
        )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise PirouterError(
            f"{path}: not a learned model of this pirouter ({exc}); run `pirouter learn` again"
        ) from None
