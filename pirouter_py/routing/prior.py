"""What the learned router knows before its owner has taught it, and how that gives way.

The shipped prior (`prior_data/prior.json.gz`, trained by `bench/prior/build.py` on the public
labelled prompts `prior_data/SOURCES.md` names, each listed by SHA-256 in
`prior_data/manifest.txt.gz`) holds two tier models over the same hashed features as the
owner's: the chance that a weak model's answer is good enough, and the strong model's (learned,
or only its rate). A config's aliases get them by quality tier: the
highest tier among the enabled chat models takes the strong chance, the lowest the weak one, and
the tiers between a share of the way up by rank.

`Router` is what `decide()` consults: per alias, a mix of the owner's learned model (`pirouter
learn`: its weights, or only its rate of good answers) and the prior, the owner's weight growing
as labels accumulate (n / (n + PRIOR_STRENGTH) for an alias learned from n labels); the prior
alone for an alias the owner has no labels of. The aliases the prior still leads (the owner's
weight under a half) keep the difficulty ladder's floor (`floored`). Its `bias` is the
configured `quality_bias` when set, else the point of the owner's (or the prior's) calibration
that keeps `quality_target` of the strongest's quality at the least strong share. One function,
`router()`, builds it, for the daemon and every command alike.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson

from pirouter_py.config import Config
from pirouter_py.errors import PirouterError
from pirouter_py.routing.learned import Calibration, Scorer, load, parse
from pirouter_py.routing.policy import FALLBACK_BIAS

PRIOR_FILE = Path(__file__).resolve().parent / "prior_data" / "prior.json.gz"
MANIFEST_FILE = PRIOR_FILE.with_name("manifest.txt.gz")
_SPACE = re.compile(r"\s+")
WEAK, STRONG = "weak", "strong"  # the prior's two tier models
PRIOR_STRENGTH = 200  # labels of the owner's that weigh as much as the prior for an alias


def load_prior(path: Path = PRIOR_FILE) -> Scorer:
    """The prior at `path` (the shipped one by default, read once per process)."""
    return _load(path)


@functools.lru_cache(maxsize=2)
def _load(path: Path) -> Scorer:
    try:
        data = orjson.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, orjson.JSONDecodeError) as exc:
        raise PirouterError(
            f"{path}: cannot read the shipped prior ({exc}); reinstall pirouter, or set "
            "[routing] prior = false"
        ) from None
    scorer = parse(data, path)
    if WEAK not in scorer.models or STRONG not in scorer.models:
        raise PirouterError(f"{path}: the prior needs models {WEAK!r} and {STRONG!r}")
    return scorer


def normalised(text: str) -> str:
    """A prompt as the manifest compares prompts: lower-case, whitespace runs as one space,
    stripped."""
    return _SPACE.sub(" ", text.lower()).strip()


def prompt_digest(text: str) -> str:
    """A prompt as the manifest lists it: the SHA-256 hex of its normalised form, UTF-8."""
    return hashlib.sha256(normalised(text).encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=1)
def trained_on() -> frozenset[str]:
    """The digests of the prompts the shipped prior was trained on (`eval` keeps its figures
    out of sample with them); empty when the manifest cannot be read."""
    try:
        lines = gzip.decompress(MANIFEST_FILE.read_bytes()).decode().splitlines()
    except (OSError, EOFError, UnicodeDecodeError):
        return frozenset()
    return frozenset(line.split(" ", 1)[0] for line in lines if line)


def pick_bias(points: Calibration, target: float) -> float | None:
    """The quality_bias of the calibration point with the least strong share whose quality
    share reaches `target`; the point of highest quality when none does; None without points."""
    if not points:
        return None
    reaching = [(strong, bias) for bias, strong, quality in points if quality >= target]
    if reaching:
        return min(reaching)[1]
    return max(points, key=lambda p: (p[2], p[0]))[0]


def tier_shares(config: Config) -> dict[str, float]:
    """Each enabled chat alias's place between the weak tier (0) and the strong one (1), by
    its quality rank among the config's enabled chat models."""
    ranks = {a: m.rank for a, m in config.models.items() if m.enabled and m.kind == "chat"}
    if not ranks:
        return {}
    low, high = min(ranks.values()), max(ranks.values())
    if low == high:
        return dict.fromkeys(ranks, 1.0)
    return {a: (r - low) / (high - low) for a, r in ranks.items()}


class Router:
    """The learned router as the policy consults it: each alias's chance of a good enough
    answer, from the owner's model, the prior, or both."""

    __slots__ = ("_floored", "bias", "owner", "prior", "shares", "source")

    def __init__(
        self,
        owner: Scorer | None,
        prior: Scorer | None,
        shares: Mapping[str, float],
        bias: float,
    ) -> None:
        self.owner, self.prior, self.shares, self.bias = owner, prior, shares, bias
        self.source = describe(owner, prior)
        self._floored: frozenset[str] | None = None

    @property
    def floored(self) -> frozenset[str]:
        """The aliases whose chance is mostly the prior's (no labels of the owner's, or fewer
        than PRIOR_STRENGTH): where the ladder finds a reason for a stronger model (a keyword,
        the size, the effort asked), the policy does not send them a request below its tier.
        The prior learned exam questions, not this install's traffic."""
        found = self._floored
        if found is None:
            models = self.owner.models if self.owner is not None else {}
            found = self._floored = (
                frozenset(
                    a for a in self.shares if a not in models or models[a].labels < PRIOR_STRENGTH
                )
                if self.prior is not None
                else frozenset()
            )
        return found

    def lazy(self, ids: list[int]) -> RouterChances:
        """The chances, each computed when the policy first asks for it."""
        return RouterChances(self, ids)

    def chances(self, ids: list[int]) -> dict[str, float]:
        return dict(self.lazy(ids).items())

    def aliases(self) -> list[str]:
        known = set(self.shares) if self.prior is not None else set()
        if self.owner is not None:
            known |= set(self.owner.models)
        return sorted(known)


def describe(owner: Scorer | None, prior: Scorer | None) -> str:
    """Which knowledge decides: "learned", "prior", or "learned+prior"."""
    if owner is not None and owner.trained and prior is not None:
        return "learned+prior"
    if prior is not None:
        return "prior"
    return "learned"


class RouterChances(Mapping[str, float]):
    """One request's chances per alias, computed on first use (the policy stops at the first
    cheap model good enough); the prior's two tier scores are computed once."""

    __slots__ = ("_done", "_ids", "_router", "_tiers")

    def __init__(self, router: Router, ids: list[int]) -> None:
        self._router, self._ids = router, ids
        self._done: dict[str, float] = {}
        self._tiers: tuple[float, float] | None = None

    def _prior(self, alias: str) -> float | None:
        router = self._router
        share = router.shares.get(alias)
        if router.prior is None or share is None:
            return None
        if self._tiers is None:
            weak = router.prior.chance(WEAK, self._ids)
            strong = router.prior.chance(STRONG, self._ids)
            if weak is None or strong is None:
                return None
            self._tiers = (weak, strong)
        weak, strong = self._tiers
        return weak + (strong - weak) * share

    def _chance(self, alias: str) -> float | None:
        router = self._router
        base = self._prior(alias)
        owner = router.owner
        model = owner.models.get(alias) if owner is not None else None
        if owner is None or model is None:
            return base  # the owner has no labels of this alias: the prior
        # the owner's model of it, or only its rate of good answers (an alias too seldom wrong
        # to learn, the strongest as a rule), weighs by its labels against the prior
        own = owner.chance(alias, self._ids)
        if own is None or base is None:
            return own if own is not None else base
        weight = model.labels / (model.labels + PRIOR_STRENGTH)
        return weight * own + (1.0 - weight) * base

    def __getitem__(self, alias: str) -> float:
        found = self._done.get(alias)
        if found is None:
            chance = self._chance(alias)
            if chance is None:
                raise KeyError(alias)
            found = self._done[alias] = chance
        return found

    def __contains__(self, alias: object) -> bool:
        if not isinstance(alias, str):
            return False
        router = self._router
        return (router.prior is not None and alias in router.shares) or (
            router.owner is not None and alias in router.owner.models
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._router.aliases())

    def __len__(self) -> int:
        return len(self._router.aliases())


def router(config: Config, owner: Scorer | None, prior: Scorer | None) -> Router | None:
    """The learned router for `config` from the owner's model and the prior (either may be
    None): None with [routing] learned off, or with neither."""
    routing = config.routing
    if not routing.learned:
        return None
    if not routing.prior:
        prior = None
    if owner is None and prior is None:
        return None
    bias = routing.quality_bias
    if bias is None:
        trained = owner is not None and owner.trained
        points = owner.calibration if trained and owner is not None else ()
        if not points and prior is not None:
            points = prior.calibration
        bias = pick_bias(points, routing.quality_target)
    return Router(owner, prior, tier_shares(config), FALLBACK_BIAS if bias is None else bias)


def build(config: Config, owner_path: Path) -> tuple[Router | None, list[str]]:
    """The learned router the daemon and every command use: the owner's model at `owner_path`
    (when there is one) with the shipped prior (unless [routing] prior = false), and what kept
    either from loading. Reads nothing with [routing] learned off."""
    if not config.routing.learned:
        return None, []
    problems: list[str] = []
    owner = prior = None
    try:
        owner = load(owner_path)
    except PirouterError as exc:
        problems.append(exc.message)
    if config.routing.prior:
        try:
            prior = load_prior()
        except PirouterError as exc:
            problems.append(exc.message)
    return router(config, owner, prior), problems
