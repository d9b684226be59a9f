"""The profile router: when no rule matches, pick the primary and fallbacks from the catalog.

Reference §3.4–3.5 exactly. Candidates are enabled models in alias byte order, filtered by the
profile (cloud-only drops local models), by capability (tools; images need supports_vision) and by
context window. If any candidate reaches the quality the difficulty requires, the weaker ones are
dropped (otherwise under-qualified routing is allowed). Each profile orders the rest by its own
keys; alias is always the last key, so the order is total. Fallbacks climb from the cheapest model
of the primary's tier upward and never go below it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from pirouter_py.config import QUALITY_RANK, Config, ModelConfig
from pirouter_py.config.rules import Profile
from pirouter_py.errors import BudgetExceeded, RoutingError
from pirouter_py.routing.features import REQUIRED_QUALITY, Difficulty, Features
from pirouter_py.types import Pin, frozen

# the learned router's threshold where neither the config (quality_bias) nor a calibration
# gives one: a cheaper model answers unless predicted ten points less likely to answer well
FALLBACK_BIAS = 0.9
Verdict = Literal["primary", "fallback", "ranked", "dropped"]
SortKey = tuple[float | int | bool | str, ...]
Ranked = list[tuple[str, ModelConfig]]


class Spent(Protocol):
    """A used-up budget (traffic.Spent)."""

    @property
    def key(self) -> str: ...

    def message(self) -> str: ...

    def retry_after(self) -> int: ...


class Live(Protocol):
    """What the daemon knows now about each model (traffic.Traffic); `pirouter route` has none."""

    @property
    def budget_action(self) -> str: ...  # "downgrade": go around spent budgets; "refuse": 429

    def busy(self, alias: str, tokens: int) -> str | None: ...  # cooling, or at rpm/tpm

    def spent(self, alias: str) -> Spent | None: ...

    def ttft(self, alias: str) -> float | None: ...

    def over_budget(self) -> Spent | None: ...  # the global budget, when it is spent


@frozen
class CandidateTrace:
    """One catalog model as the policy saw it: its place in the order, or why it was dropped."""

    alias: str
    verdict: Verdict
    reason: str
    position: int | None = None  # 1-based place in the profile's order; None when dropped


@frozen
class PolicyChoice:
    primary: str
    cascade: tuple[str, ...]
    rule: str  # "policy:<profile>:<difficulty>"
    candidates: tuple[CandidateTrace, ...] = ()
    pin: str | None = None  # what affinity did: hard, soft, new, or escaped:<why>
    notes: tuple[str, ...] = ()


def _order(profile: Profile, required: int) -> Callable[[tuple[str, ModelConfig]], SortKey]:
    def dist(m: ModelConfig) -> int:
        return max(0, m.rank - required)

    if profile == "local-first":
        return lambda am: (not am[1].local, dist(am[1]), am[1].cost, am[0])
    if profile == "best-quality":

        def best(am: tuple[str, ModelConfig]) -> SortKey:
            window = am[1].context_window
            return (
                -am[1].rank,
                -(window if window is not None else float("inf")),
                am[1].cost,
                am[0],
            )

        return best
    return lambda am: (dist(am[1]), am[1].cost, not am[1].local, am[0])


def _static_drop(model: ModelConfig, profile: Profile, tools: bool, images: bool) -> str | None:
    """Why a model can never take requests of this kind (whatever their size), or None."""
    if not model.enabled:
        return "disabled (enabled = false)"
    if model.kind != "chat":
        return f"an {model.kind} model (kind = {model.kind!r})"
    if profile == "cloud-only" and model.local:
        return "local model, and the profile is cloud-only"
    if tools and not model.supports_tools:
        return "no tool support (supports_tools = false), and the request offers tools"
    if images and not model.supports_vision:
        return "no image input (supports_vision = false), and the request has images"
    return None


def _fits(model: ModelConfig, tokens: int) -> bool:
    return model.context_window is None or model.context_window >= tokens


@frozen
class _Orders:
    """What a kind of request sees of the catalog, computed once per config (a request then
    only filters these lists, and filtering keeps their order)."""

    ranked: tuple[tuple[str, ModelConfig], ...]  # the capable models, in the profile's order
    climb: tuple[tuple[str, ModelConfig], ...]  # the same, in fallback order
    dropped: tuple[tuple[str, str], ...]  # (alias, why) for the rest, in alias order


def _orders(
    config: Config, profile: Profile, level: Difficulty, tools: bool, images: bool
) -> _Orders:
    cache = config.policy_cache
    key = (profile, level, tools, images)
    orders = cache.get(key)
    if orders is None:
        capable, dropped = [], []
        for alias in config.aliases:
            model = config.models[alias]
            reason = _static_drop(model, profile, tools, images)
            if reason is None:
                capable.append((alias, model))
            else:
                dropped.append((alias, reason))
        required = QUALITY_RANK[REQUIRED_QUALITY[level]]
        orders = _Orders(
            tuple(sorted(capable, key=_order(profile, required))),
            tuple(sorted(capable, key=lambda am: (am[1].rank, am[1].cost, am[0]))),
            tuple(dropped),
        )
        cache[key] = orders
    return orders


def _describe(model: ModelConfig) -> str:
    place = "local" if model.local else "cloud"
    return f"{model.quality}, ${model.cost:g}/M in+out, {place}"


def choose(
    config: Config,
    features: Features,
    level: Difficulty,
    profile: Profile,
    explain: bool = False,
    live: Live | None = None,
    pin: Pin | None = None,
    learned: Mapping[str, float] | None = None,
    unavailable: Mapping[str, str] | None = None,
    bias: float = FALLBACK_BIAS,
    floor: frozenset[str] = frozenset(),
) -> PolicyChoice:
    """The policy decision for a request no rule matched; raises RoutingError when none fits.

    With `live`: models whose budget is spent drop out ("downgrade") or refuse the request when
    the choice would land on one ("refuse"); models tied on the profile's keys are ordered by
    recent time to first token; busy models (cooling, at a limit) go last. `unavailable` models
    (a key variable unset) are left out, with their reason in the explanation. With `pin`: session
    affinity (see `_affinity`). With `learned` (each alias's predicted chance of a good enough
    answer, [routing] learned) and its threshold `bias`: see `_learned_pick`; the ladder's quality
    floor does not apply, but for the aliases in `floor` (those whose chance is mostly the shipped
    prior's, prior.Router.floored): they take only requests the ladder finds them good enough
    for."""
    required_name = REQUIRED_QUALITY[level]
    required = QUALITY_RANK[required_name]
    tokens = features.estimated_tokens
    orders = _orders(config, profile, level, features.has_tools, features.has_images)
    fitting = [am for am in orders.ranked if _fits(am[1], tokens)]
    missing: dict[str, str] = {}
    if unavailable:
        missing = {a: unavailable[a] for a, _ in fitting if a in unavailable}
        fitting = [am for am in fitting if am[0] not in unavailable]
    spent: dict[str, Spent] = {}
    if live is not None and fitting:
        spent = {a: why for a, _ in fitting if (why := live.spent(a)) is not None}
        if spent and live.budget_action == "downgrade":
            fitting = [am for am in fitting if am[0] not in spent]
            if not fitting:
                raise refused(next(iter(spent.values())), "no model without a spent budget")
    if not fitting:
        raise RoutingError(nothing_fits(config, features, profile, missing))
    adequate = [am for am in fitting if am[1].rank >= required]
    below = fitting if adequate else []
    pool = adequate or fitting
    notes: list[str] = []
    rule = f"policy:{profile}:{level}"
    picked = None
    if learned:
        pickable = [am for am in fitting if am[0] not in floor or am[1].rank >= required]
        picked = _learned_pick(pickable, learned, bias)
    if picked is not None:
        others = {a for a, _ in fitting} - {picked[0][0]}
        pool = [picked[0], *(am for am in orders.ranked if am[0] in others)]
        below = []
        rule = f"policy:{profile}:learned"
        notes.append(picked[1])
    busy: dict[str, str] = {}
    if live is not None:
        if config.routing.latency_ties and len(pool) > 1 and picked is None:
            pool = _by_latency(pool, _order(profile, required), live)
        busy = {a: w for a, _ in pool if (w := live.busy(a, tokens)) is not None}
    primary, primary_model = pool[0]
    pin_state = None
    if pin is not None:
        primary, pin_state = _affinity(config, pin, pool, fitting, orders, busy, spent, tokens)
        primary_model = config.models[primary]
    if live is not None and live.budget_action == "refuse" and primary in spent:
        raise refused(spent[primary], f"`{primary}` was chosen")
    pool_names = {a for a, _ in fitting if a not in spent}
    cascade = _climb(config, orders, pool_names, primary, primary_model.rank, tokens)
    chain = (primary, *cascade)
    if busy and any(a in busy for a in chain):  # busy models are tried last, never dropped
        chain = (*(a for a in chain if a not in busy), *(a for a in chain if a in busy))
        notes.append("tried last: " + "; ".join(f"{a} ({busy[a]})" for a in chain if a in busy))
        primary, cascade = chain[0], chain[1:]

    candidates: tuple[CandidateTrace, ...] = ()
    if explain:
        ranked = [
            CandidateTrace(
                alias,
                "primary" if alias == primary else "fallback" if alias in cascade else "ranked",
                _describe(model),
                position,
            )
            for position, (alias, model) in enumerate(pool, 1)
        ]
        too_small = [
            (a, f"context window {m.context_window} < estimated {tokens} tokens")
            for a, m in orders.ranked
            if not _fits(m, tokens)
        ]
        kept = {a for a, _ in pool}
        gone = [(a, f"budget spent: {s.key}") for a, s in spent.items() if a not in kept]
        dropped = [
            CandidateTrace(a, "dropped", why)
            for a, why in sorted([*orders.dropped, *too_small, *gone, *missing.items()])
        ]
        dropped += [
            CandidateTrace(a, "dropped", f"{m.quality} is below the required {required_name}")
            for a, m in sorted(below)
            if m.rank < required
        ]
        candidates = (*ranked, *dropped)
    return PolicyChoice(
        primary,
        cascade,
        rule,
        candidates,
        pin_state,
        tuple(notes),
    )


def nothing_fits(
    config: Config, features: Features, profile: Profile, missing: Mapping[str, str]
) -> str:
    """Why no model can take the request, the constraint that failed first, in the config's
    own words, and what to do about it."""
    tokens = features.estimated_tokens
    chat = [(a, config.models[a]) for a in config.aliases if config.models[a].kind == "chat"]
    pool = [am for am in chat if am[1].enabled]
    asked = [f'profile = "{profile}"']
    if features.has_tools:
        asked.append("tools")
    if features.has_images:
        asked.append("images")
    asked.append(f"estimated {tokens} token{'' if tokens == 1 else 's'}")
    context = f" (request: {', '.join(asked)})"
    if not chat:
        return f"no chat model in the catalog: add one with `pirouter models add`{context}"
    if not pool:
        return (
            "every model is disabled: enable one with `pirouter models enable ALIAS` "
            f"(enabled = true){context}"
        )
    needs: list[tuple[bool, Callable[[ModelConfig], bool], str, str]] = [
        (
            profile == "cloud-only",
            lambda m: not m.local,
            "cloud (the profile is cloud-only)",
            "no cloud model for the cloud-only profile: enable a cloud model, or set "
            "[routing] profile to another profile",
        ),
        (
            features.has_images,
            lambda m: m.supports_vision,
            "image input (supports_vision = true)",
            "no model takes images: enable a model with supports_vision = true, or send the "
            "request without images",
        ),
        (
            features.has_tools,
            lambda m: m.supports_tools,
            "tool support (supports_tools = true)",
            "no model takes tools: enable a model with supports_tools = true, or send the "
            "request without tools",
        ),
    ]
    had: list[str] = []
    for applies, takes, label, why in needs:
        if not applies:
            continue
        kept = [am for am in pool if takes(am[1])]
        if not kept and any(takes(m) for _, m in chat if m.enabled):
            both = " and ".join([*had, label])
            return f"no enabled model has {both}: enable one that has them all{context}"
        if not kept:
            return why + context
        pool = kept
        had.append(label)
    roomy = [am for am in pool if _fits(am[1], tokens)]
    if not roomy:
        largest = max(pool, key=lambda am: am[1].context_window or 0)
        return (
            f"no model's context window holds the request's estimated {tokens} tokens (the "
            f"largest that could take it: {largest[0]}, context_window = "
            f"{largest[1].context_window}): use a model with a larger context_window, or send "
            f"a shorter request{context}"
        )
    left = "; ".join(f"{a} ({w})" for a, w in missing.items())
    return f"no model is available: {left or 'every candidate is left out'}{context}"


def capable(config: Config, features: Features, level: Difficulty, profile: Profile) -> Ranked:
    """The models that can take a request of this kind and size (no live state): what the
    learned router chooses among."""
    orders = _orders(config, profile, level, features.has_tools, features.has_images)
    return [am for am in orders.ranked if _fits(am[1], features.estimated_tokens)]


def learned_order(fitting: Ranked) -> tuple[list[str], str]:
    """The learned router's view of the capable models: the cheaper ones, cheapest first, and
    the strongest (highest quality, then cheapest), which takes what none of them may."""
    strongest = min(fitting, key=lambda am: (-am[1].rank, am[1].cost, am[0]))
    cheaper = sorted(
        (am for am in fitting if am[0] != strongest[0] and am[1].cost <= strongest[1].cost),
        key=lambda am: (am[1].cost, -am[1].rank, am[0]),
    )
    return [a for a, _ in cheaper], strongest[0]


def learned_pick(
    cheaper: list[str], strongest: str, chances: Mapping[str, float], bias: float
) -> str:
    """The first of `cheaper` (cheapest first) whose predicted chance of a good enough answer
    falls short of the strongest's by at most 1 - `bias`, else `strongest` (a strongest model
    with no prediction counts as always good enough)."""
    top = chances.get(strongest, 1.0)
    for alias in cheaper:
        chance = chances.get(alias)
        if chance is not None and top - chance <= 1.0 - bias:
            return alias
    return strongest


def _learned_pick(
    fitting: Ranked, learned: Mapping[str, float], bias: float
) -> tuple[tuple[str, ModelConfig], str] | None:
    """The learned router's choice and why; None when the learned model knows none of the
    cheaper candidates (the ladder decides)."""
    cheaper, strongest = learned_order(fitting)
    known = [a for a in cheaper if learned.get(a) is not None]
    if not known:
        return None
    models = dict(fitting)
    alias = learned_pick(cheaper, strongest, learned, bias)
    top = learned.get(strongest, 1.0)
    if alias != strongest:
        why = (
            f"learned: {alias} {learned[alias]:.2f}, {strongest} {top:.2f}: within "
            f"1 - bias ({1 - bias:.2f})"
        )
    else:
        best = max((learned[a], a) for a in known)
        why = (
            f"learned: the strongest, {strongest} {top:.2f} (best cheaper: {best[1]} "
            f"{best[0]:.2f}, more than 1 - bias ({1 - bias:.2f}) below)"
        )
    return (alias, models[alias]), why


def refused(spent: Spent, why: str) -> BudgetExceeded:
    return BudgetExceeded(f"{spent.message()} ({why})", spent.retry_after())


def _by_latency(
    pool: Ranked, key: Callable[[tuple[str, ModelConfig]], SortKey], live: Live
) -> Ranked:
    """Within runs of models equal on the profile's keys (all but the alias), the one with the
    lower recent time to first token first; unmeasured models keep their place after measured."""
    out: Ranked = []
    i = 0
    while i < len(pool):
        head = key(pool[i])[:-1]
        j = i + 1
        while j < len(pool) and key(pool[j])[:-1] == head:
            j += 1
        group = pool[i:j]
        if len(group) > 1:
            inf = float("inf")
            group = sorted(group, key=lambda am: live.ttft(am[0]) or inf)
        out += group
        i = j
    return out


def _affinity(
    config: Config,
    pin: Pin,
    pool: Ranked,
    fitting: Ranked,
    orders: _Orders,
    busy: dict[str, str],
    spent: dict[str, Any],
    tokens: int,
) -> tuple[str, str]:
    """Keep a conversation on the model that served its previous turn, so the provider's prompt
    cache stays warm. Hard window: that model, unless it must escape (removed, disabled, busy,
    budget spent, lacks a capability the turn needs, or the conversation outgrew its context
    window: then the closest larger-context model). Soft window: it wins ties and near-ties
    (same quality and locality as the best, costing at most `[affinity] near_tie` more)."""
    top = pool[0][0]
    model = config.models.get(pin.alias)
    if model is None:
        return top, "escaped:removed"
    if pin.alias in busy:
        return top, "escaped:busy"
    if pin.alias in spent:
        return top, "escaped:budget"
    capable = {a for a, _ in orders.ranked}
    if pin.alias not in capable:
        return top, "escaped:capability"
    if not _fits(model, tokens):
        window = model.context_window or 0
        larger = [
            (m.context_window or 0, a)
            for a, m in fitting
            if a not in busy and a not in spent and (m.context_window or 0) > window
        ]
        return (min(larger)[1] if larger else top), "escaped:context"
    if pin.alias == top:
        return top, "hard" if pin.hard else "soft"
    if pin.hard:
        return pin.alias, "hard"
    in_pool = dict(pool)
    if pin.alias not in in_pool:
        return top, "soft-lost"
    best = in_pool[top]
    same_tier = model.rank == best.rank and model.local == best.local
    if same_tier and model.cost <= best.cost * (1 + config.affinity.near_tie):
        return pin.alias, "soft"
    return top, "soft-lost"


def _climb(
    config: Config, orders: _Orders, pool: set[str], primary: str, rank: int, tokens: int
) -> tuple[str, ...]:
    """Fallbacks: from the cheapest model of the primary's tier upward, never below it."""
    if not config.routing.auto_cascade:
        return ()
    limit = config.routing.max_policy_fallbacks
    climb = [
        a
        for a, m in orders.climb
        if a in pool and a != primary and m.rank >= rank and _fits(m, tokens)
    ]
    return tuple(climb[:limit])


def fallbacks_for(
    config: Config, features: Features, level: Difficulty, profile: Profile, primary: str
) -> tuple[str, ...]:
    """Policy fallbacks for a model the client named ([routing] honor_requested_model)."""
    orders = _orders(config, profile, level, features.has_tools, features.has_images)
    capable = {a for a, m in orders.ranked if _fits(m, features.estimated_tokens)}
    return _climb(
        config, orders, capable, primary, config.models[primary].rank, features.estimated_tokens
    )
