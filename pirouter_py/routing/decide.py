"""The routing decision: first-match rules, then the policy. Pure: no I/O, no clock.

`decide()` is what the daemon runs for every request and what `pirouter route` explains. A rule's
targets are validated against the catalog after `$header:` substitution (v0.1's error text); a rule
that sends images to a model without `supports_vision` is a clear error rather than a silent drop.
With `explain=True` the decision carries each rule tried and each catalog model's fate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

from pirouter_py.config import CascadeConfig, Config
from pirouter_py.config.rules import HEADER_TARGET, Profile, When
from pirouter_py.errors import RoutingError
from pirouter_py.routing import features as feats
from pirouter_py.routing import learned as learn
from pirouter_py.routing import policy, rules
from pirouter_py.routing.features import Difficulty, Features
from pirouter_py.routing.policy import CandidateTrace, Live
from pirouter_py.routing.prior import Router
from pirouter_py.routing.rules import Facts, RuleTrace
from pirouter_py.types import ChatRequest, Pin, frozen

PROFILE_HEADER = "x-pirouter-profile"
PROFILES: tuple[Profile, ...] = get_args(Profile)
# What the ledger keeps of the headers routing reads (`kept_headers`), so `replay` re-decides
# with them: User-Agent, every x-pirouter-* header and any other a rule names; never a secret.
KEPT_PREFIX = "x-pirouter-"
KEPT_CHARS = 512  # a kept value is cut to this many characters
KEPT_MOST = 32  # headers kept at most per request
SECRET_PARTS = ("authorization", "cookie", "key", "token", "secret", "password", "auth")


@frozen
class Decision:
    """Which models to try, in order, and why."""

    rule: str  # a [[rules]] name, or "policy:<profile>:<difficulty>"
    primary: str
    cascade: tuple[str, ...]
    source: Literal["rule", "requested", "policy"]
    profile: Profile
    difficulty: Difficulty
    difficulty_reason: str
    features: Features
    rule_traces: tuple[RuleTrace, ...] = ()
    candidates: tuple[CandidateTrace, ...] = ()
    notes: tuple[str, ...] = ()
    escalation: CascadeConfig | None = None  # the matched rule's triggers, when it sets its own
    pin: str | None = None  # session affinity: hard, soft, soft-lost, escaped:<why>; None: off
    ids: list[int] | None = None  # the learned router's feature ids, when it read them
    continue_on_cut: bool = True  # the matched rule's `continue_on_cut` (a stream cut mid-way)
    # the learned router's knowledge when it chose (learned, prior, learned+prior); None: the
    # ladder, a rule or the requested model chose
    decider: str | None = None
    chances: tuple[tuple[str, float], ...] = ()  # with explain: each candidate's predicted chance

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.primary, *self.cascade)


def decide(
    config: Config,
    request: ChatRequest,
    headers: Mapping[str, str],
    *,
    profile: Profile | None = None,
    explain: bool = False,
    live: Live | None = None,
    pin: Pin | None = None,
    scorer: Router | None = None,
    unavailable: Mapping[str, str] | None = None,
) -> Decision:
    """Route `request`; `headers` must answer lower-case names. Raises RoutingError.

    `live` (the daemon's traffic state) makes the decision go around busy models and spent
    budgets and break the policy's ties by latency; `pin` is the model that served this
    conversation's previous turn (session affinity, policy decisions only); `scorer` is the
    learned router (prior.build's), used by the policy with [routing] learned on; `unavailable`
    names the models that cannot be called now and why (a key variable unset): they are left out
    of every chain, the reason noted, and the request goes to the models that can answer."""
    features = feats.extract(request, headers)
    turns = config.routing.turns
    level, level_reason = feats.difficulty(request, features, headers, turns=turns)
    if turns and pin is not None:
        # a tool result goes on where its step started (its cache is warm, its reasoning there);
        # a new instruction is routed afresh (with [affinity] on, the previous model still wins
        # ties and near-ties)
        if features.turn == "tool_result":
            pin = Pin(pin.alias, pin.age_s, hard=True)
        else:
            pin = Pin(pin.alias, pin.age_s, hard=False) if config.affinity.enabled else None
    chosen_profile = profile or _header_profile(headers) or config.routing.profile
    notes: list[str] = []
    if live is not None and live.budget_action == "downgrade":
        over = live.over_budget()
        if over is not None and chosen_profile != "local-first":
            chosen_profile = "local-first"
            notes.append(f"{over.key} is spent: routing with the local-first profile")
    trace: list[RuleTrace] | None = [] if explain else None
    rule = None
    if config.rules:
        facts = Facts(request, features, headers, chosen_profile, level)
        rule = rules.first_match(config.rules, facts, trace)
    traces = tuple(trace or ())
    escalation = None
    continuing = True
    source: Literal["rule", "requested", "policy"] = "policy"
    chain: tuple[str, ...] = ()
    name = ""
    if rule is not None:
        then = rule.then
        escalation = rule.cascade_config
        continuing = then.continue_on_cut
        name, source = rule.name, "rule"
        if then.difficulty is not None:
            level, level_reason = then.difficulty, f"rule `{rule.name}` sets difficulty"
        chosen_profile = then.profile or chosen_profile
        if then.primary is not None:
            chain, blind = _rule_chain(
                config, rule.name, then.primary, then.cascade, headers, features
            )
            notes += blind
            who = f"rule `{rule.name}`"
    elif config.routing.honor_requested_model and request.model in config.models:
        requested = request.model
        if config.models[requested].kind != "chat":
            raise RoutingError(
                f"the requested model `{requested}` is an {config.models[requested].kind} "
                "model: ask for a chat model, or `auto`"
            )
        _check_vision(config, features, requested, f"the requested model `{requested}`")
        fallbacks = policy.fallbacks_for(config, features, level, chosen_profile, requested)
        name, source, chain = f"requested:{requested}", "requested", (requested, *fallbacks)
        who = "the requested model"
    if chain and unavailable:
        gone = [a for a in chain if a in unavailable]
        if gone:
            notes.append("left out: " + "; ".join(f"{a} ({unavailable[a]})" for a in gone))
            chain = tuple(a for a in chain if a not in unavailable)
    if chain and live is not None:
        chain = _live_chain(chain, live, features.estimated_tokens, who, notes)
    if not chain:  # the policy decides: no rule matched, a rule handed over, or budgets spent
        ids = chances = None
        bias, floor = policy.FALLBACK_BIAS, frozenset[str]()
        if scorer is not None and config.routing.learned:
            ids = learn.request_ids(request, features)
            chances, bias, floor = scorer.lazy(ids), scorer.bias, scorer.floored
        choice = policy.choose(
            config,
            features,
            level,
            chosen_profile,
            explain,
            live,
            pin,
            chances,
            unavailable,
            bias,
            floor,
        )
        learned_chose = choice.rule.endswith(":learned")
        shown: tuple[tuple[str, float], ...] = ()
        if explain and chances is not None:
            shown = tuple(
                (c.alias, p) for c in choice.candidates if (p := chances.get(c.alias)) is not None
            )
        if source == "rule":
            notes.append(f"rule `{name}` hands the request to the policy ({choice.rule})")
        else:
            name = choice.rule
        return Decision(
            name,
            choice.primary,
            choice.cascade,
            "policy",
            chosen_profile,
            level,
            level_reason,
            features,
            traces,
            choice.candidates,
            (*notes, *choice.notes),
            escalation,
            choice.pin,
            ids,
            continuing,
            scorer.source if learned_chose and scorer is not None else None,
            shown,
        )
    return Decision(
        name,
        chain[0],
        chain[1:],
        source,
        chosen_profile,
        level,
        level_reason,
        features,
        traces,
        (),
        tuple(notes),
        escalation,
        continue_on_cut=continuing,
    )


def _rule_chain(
    config: Config,
    name: str,
    primary: str,
    cascade: list[str],
    headers: Mapping[str, str],
    features: Features,
) -> tuple[tuple[str, ...], list[str]]:
    """A rule's models after `$header:` substitution, checked against the catalog."""
    first = rules.resolve_target(primary, headers)
    rest = [rules.resolve_target(a, headers) for a in cascade]
    for alias in (first, *rest):
        if alias not in config.models:
            raise RoutingError(f"rule `{name}` selected unknown model alias `{alias}`")
    notes: list[str] = []
    if features.has_images:
        _check_vision(config, features, first, f"rule `{name}` selected `{first}`")
        blind = [a for a in rest if not config.models[a].supports_vision]
        if blind:
            notes.append("left out of the cascade, no image input: " + ", ".join(blind))
            rest = [a for a in rest if a not in blind]
    return (first, *rest), notes


def _live_chain(
    chain: tuple[str, ...], live: Live, tokens: int, who: str, notes: list[str]
) -> tuple[str, ...]:
    """A named chain (rule or requested model) under live conditions: spent budgets leave it
    (or refuse the request when its primary is spent and the action is refuse; an emptied chain
    goes to the policy), busy models are tried last."""
    spent = {a: s for a in chain if (s := live.spent(a)) is not None}
    if spent:
        if live.budget_action == "refuse" and chain[0] in spent:
            raise policy.refused(spent[chain[0]], f"{who} chose `{chain[0]}`")
        chain = tuple(a for a in chain if a not in spent)
        notes.append("budget spent, left out: " + ", ".join(spent))
        if not chain:
            return ()
    busy = {a: w for a in chain if (w := live.busy(a, tokens)) is not None}
    if busy:
        chain = (*(a for a in chain if a not in busy), *(a for a in chain if a in busy))
        notes.append("tried last: " + "; ".join(f"{a} ({w})" for a, w in busy.items()))
    return chain


def _header_profile(headers: Mapping[str, str]) -> Profile | None:
    """The profile a client asks for with `x-pirouter-profile` (ignored when not a profile)."""
    value = headers.get(PROFILE_HEADER)
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in PROFILES else None


def _check_vision(config: Config, features: Features, alias: str, who: str) -> None:
    """A request with images may only go to a model with supports_vision."""
    if features.has_images and not config.models[alias].supports_vision:
        raise RoutingError(
            f"{who}, which does not accept images (supports_vision = false); send the request "
            "without images or route it to a model with supports_vision = true"
        )


def _rule_headers(config: Config) -> frozenset[str]:
    """The header names the config's rules read (`header` matches, `$header:` targets), found
    once per config."""
    cache = config.policy_cache
    found = cache.get("rule_headers")
    if found is None:
        names: set[str] = set()

        def walk(when: When | None) -> None:
            if when is None:
                return
            if when.header is not None:
                names.add(when.header.name)
            for part in (*(when.all_ or ()), *(when.any_ or ())):
                walk(part)
            walk(when.not_)

        for rule in config.rules:
            walk(rule.when)
            targets = (rule.then.primary or "", *rule.then.cascade)
            names.update(
                t[len(HEADER_TARGET) :].lower() for t in targets if t.startswith(HEADER_TARGET)
            )
        found = cache["rule_headers"] = frozenset(names)
    return found


def kept_headers(config: Config, headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers `decide` reads, as the ledger keeps them for `replay`: User-Agent,
    x-pirouter-* and those the rules name, lower-cased, values cut to KEPT_CHARS, at most
    KEPT_MOST; never one whose name says it carries a secret (authorization, x-api-key,
    cookie, ...). The client key's name is not a header: the ledger keeps it as `client`."""
    named = _rule_headers(config)
    kept: dict[str, str] = {}
    for raw, value in headers.items():
        name = raw.lower()
        if name in kept or not (
            name == "user-agent" or name.startswith(KEPT_PREFIX) or name in named
        ):
            continue
        if any(part in name for part in SECRET_PARTS):
            continue
        kept[name] = value[:KEPT_CHARS]
        if len(kept) >= KEPT_MOST:
            break
    return kept
