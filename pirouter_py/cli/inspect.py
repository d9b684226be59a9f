"""`pirouter check-config`, `models` and `route`: what the config says and how it routes.

Nothing here talks to a daemon or an upstream; `route` runs the daemon's own `routing.decide`.
"""

import os
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pirouter_py.cli.common import (
    ConfigOption,
    JsonOption,
    app,
    config_failed,
    fail,
    guard,
    learned_scorer,
    load,
    print_json,
)
from pirouter_py.errors import ConfigError, ExitCode

# A 1×1 PNG, so `route --image` builds a request shaped like a real one with an image.
SAMPLE_IMAGE = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class ProfileName(StrEnum):
    local_first = "local-first"
    balanced = "balanced"
    best_quality = "best-quality"
    cloud_only = "cloud-only"


# ---------------------------------------------------------------------------------------------
# check-config


@app.command("check-config")
def check_config(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Validate the config file and summarise it."""
    try:
        loaded = load(ctx, config, warn=False)
    except ConfigError as exc:
        if not as_json:
            config_failed(exc)
        print_json(
            {
                "ok": False,
                "errors": [_problem_json(p) for p in exc.problems],
                "warnings": [_problem_json(p) for p in exc.warnings],
            }
        )
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    cfg = loaded.config
    providers: list[dict[str, Any]] = [
        {
            "name": name,
            "type": p.kind,
            "base_url": p.url,
            "api_key_env": p.api_key_env,
            # a key will be sent: a literal, or one of its variables is set
            "api_key_set": bool(p.api_key) or any(os.environ.get(e) for e in p.key_envs),
            "key": _key_state(p.kind, p.key_envs, p.api_key),
        }
        for name, p in sorted(cfg.providers.items())
    ]
    if as_json:
        print_json(
            {
                "ok": True,
                "source": loaded.source,
                "default": loaded.is_default,
                "models": len(cfg.models),
                "rules": len(cfg.rules),
                "providers": providers,
                "warnings": [_problem_json(p) for p in loaded.warnings],
            }
        )
        return
    out = [
        f"config OK: {loaded.source}",
        f"  models:    {len(cfg.models)}",
        f"  rules:     {len(cfg.rules)}",
        f"  providers: {len(providers)}",
    ]
    width = max((len(p["name"]) for p in providers), default=0)
    for p in providers:
        out.append(f"    {p['name']:<{width}}  {p['type']:<9}  {p['base_url']}  {p['key']}")
    out.append(f"  warnings:  {len(loaded.warnings)}")
    out += [f"    {w}" for w in loaded.warnings]
    sys.stdout.write("\n".join(out) + "\n")


def _key_state(kind: str, envs: tuple[str, ...], literal: str | None) -> str:
    """How a provider's key is found, naming variables only, never a key."""
    import os

    if kind == "ollama" and not envs:
        return "no key needed"
    if envs:
        states = [f"${e} ({'set' if os.environ.get(e) else 'NOT SET'})" for e in envs]
        return ("key from " if len(envs) == 1 else "keys rotated from ") + ", ".join(states)
    return "literal api_key" if literal else "no key configured: none is sent"


def _problem_json(problem: Any) -> dict[str, Any]:
    return {
        "source": problem.source,
        "line": problem.line,
        "column": problem.column,
        "key": problem.key,
        "message": problem.message,
        "text": str(problem),
    }


# ---------------------------------------------------------------------------------------------
# models


# ---------------------------------------------------------------------------------------------
# route


def _parse_header(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition(":")
    if not sep or not name.strip():
        raise typer.BadParameter(f"{raw!r} is not 'Name: value'", param_hint="--header")
    return name.strip().lower(), value.strip()


@app.command("route")
def route(
    ctx: typer.Context,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", "-p", help="The user message; '-' reads standard input.", show_default=False
        ),
    ] = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            help="Route every request of a JSON-lines file ('-': standard input): an OpenAI chat "
            'body, or {"body": ..., "headers": ..., "protocol": "openai|anthropic|ollama|'
            'responses"}, a line each; prints one JSON decision a line.',
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="The model the client asks for.")] = "auto",
    tools: Annotated[bool, typer.Option("--tools", help="Offer one synthetic tool.")] = False,
    image: Annotated[bool, typer.Option("--image", help="Attach one image to the prompt.")] = False,
    system: Annotated[
        str | None, typer.Option("--system", help="A system message.", show_default=False)
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="A request header 'Name: value' (repeatable).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        ProfileName | None,
        typer.Option(
            "--profile",
            help="Use this policy profile instead of [routing] profile.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[bool, typer.Option("--stream", help="The client asks for a stream.")] = False,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="The client's max_tokens.", show_default=False, min=1),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Dry-run the routing decision for a prompt, and explain it."""
    from pirouter_py.routing.decide import decide
    from pirouter_py.types import ChatRequest, ImagePart, Message, TextPart, ToolSpec

    if (prompt is None) == (batch is None):
        raise typer.BadParameter("give --prompt or --batch, one of them", param_hint="--prompt")
    if batch is not None:  # decided as --prompt decides: the learned model, the profile
        batch_loaded = guard(lambda: load(ctx, config))
        lines = sys.stdin if str(batch) == "-" else _open(batch)
        picked = profile.value if profile is not None else None
        decisions = route_lines(
            batch_loaded.config, lines, scorer=learned_scorer(batch_loaded), profile=picked
        )
        sys.stdout.writelines(decisions)
        return
    assert prompt is not None
    headers = dict(_parse_header(h) for h in header or [])
    text = sys.stdin.read() if prompt == "-" else prompt
    loaded = guard(lambda: load(ctx, config))
    cfg, scorer = loaded.config, learned_scorer(loaded)
    messages = [Message("system", (TextPart(system),))] if system is not None else []
    parts = (TextPart(text), ImagePart(SAMPLE_IMAGE)) if image else (TextPart(text),)
    messages.append(Message("user", parts))
    offered = (ToolSpec("tool", "synthetic dry-run tool", {"type": "object", "properties": {}}),)
    request = ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=offered if tools else (),
        stream=stream,
        max_tokens=max_tokens,
    )
    chosen = profile.value if profile is not None else None
    decision = guard(
        lambda: decide(
            cfg,
            request,
            headers,
            profile=chosen,  # type: ignore[arg-type]
            explain=True,
            scorer=scorer,
            unavailable=cfg.unavailable(os.environ),
        )
    )
    if as_json:
        print_json(_decision_json(decision))
        return
    sys.stdout.write("\n".join(_decision_lines(decision, cfg)) + "\n")


def _open(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as lines:
            yield from lines
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", ExitCode.USAGE)


def route_lines(
    cfg: Any, lines: Iterable[str], *, scorer: Any = None, profile: str | None = None
) -> Iterator[str]:
    """One JSON decision (or error) per request line, without I/O but the lines themselves;
    with the learned model (`scorer`) and `profile` as `route --prompt` and the daemon use them."""
    import orjson

    from pirouter_py.errors import PirouterError
    from pirouter_py.routing.decide import decide
    from pirouter_py.wire import codecs

    by_protocol = codecs.BY_PROTOCOL
    missing = cfg.unavailable(os.environ)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        out: dict[str, Any] = {"line": number}
        try:
            given = orjson.loads(line)
            wrapped = isinstance(given, dict) and isinstance(given.get("body"), dict)
            body = given["body"] if wrapped else given
            protocol = given.get("protocol", "openai") if wrapped else "openai"
            codec = by_protocol.get(protocol)
            if codec is None:
                raise ValueError(f"unknown protocol {protocol!r}: {', '.join(by_protocol)}")
            raw_headers = given.get("headers") if wrapped else None
            headers = {str(k).lower(): str(v) for k, v in (raw_headers or {}).items()}
            d = decide(
                cfg,
                codec.decode_request(orjson.dumps(body)),
                headers,
                profile=profile,  # type: ignore[arg-type]
                scorer=scorer,
                unavailable=missing,
            )
            out |= {
                "rule": d.rule,
                "primary": d.primary,
                "chain": list(d.chain),
                "difficulty": d.difficulty,
                "turn": d.features.turn,
                "reasons": [d.difficulty_reason, *d.notes],
            }
        except (ValueError, AttributeError, PirouterError) as exc:
            out["error"] = exc.message if isinstance(exc, PirouterError) else str(exc)
        yield orjson.dumps(out).decode() + "\n"


def _decision_json(d: Any) -> dict[str, Any]:
    chances = dict(d.chances)
    return {
        "rule": d.rule,
        "primary": d.primary,
        "cascade": list(d.cascade),
        "source": d.source,
        "difficulty": d.difficulty,
        "estimated_tokens": d.features.estimated_tokens,
        "turn": d.features.turn,
        "effort": d.features.effort,
        "explanation": {
            "difficulty_reason": d.difficulty_reason,
            "profile": d.profile,
            "has_tools": d.features.has_tools,
            "has_images": d.features.has_images,
            "rules": [
                {
                    "name": t.name,
                    "matched": t.matched,
                    "reason": t.reason,
                    "checks": [_check_json(c) for c in t.checks],
                }
                for t in d.rule_traces
            ],
            "candidates": [
                {
                    "alias": c.alias,
                    "verdict": c.verdict,
                    "position": c.position,
                    "reason": c.reason,
                    **({"chance": chances[c.alias]} if c.alias in chances else {}),
                }
                for c in d.candidates
            ],
            # which knowledge chose (learned, prior, learned+prior); null: the ladder or a rule
            "decided_by": d.decider,
            "notes": list(d.notes),
        },
    }


def _check_json(c: Any) -> dict[str, Any]:
    out = {"key": c.key, "held": c.held, "detail": c.detail}
    if c.children:
        out["checks"] = [_check_json(child) for child in c.children]
    return out


def _check_lines(checks: Any, depth: int) -> list[str]:
    lines = []
    for c in checks:
        mark = "+" if c.held else "-"
        lines.append(f"{'    ' * depth}  {mark} {c.key}: {c.detail}")
        lines += _check_lines(c.children, depth + 1)
    return lines


def _decision_lines(d: Any, cfg: Any) -> list[str]:
    from pirouter_py.routing.features import REQUIRED_QUALITY

    f = d.features
    effort = f", effort {f.effort}" if f.effort else ""
    lines = [
        f"rule:    {d.rule}",
        f"primary: {d.primary}",
        f"cascade: {' -> '.join(d.cascade) if d.cascade else '<none>'}",
        "",
        f"request: {f.estimated_tokens} estimated tokens, difficulty {d.difficulty} "
        f"({d.difficulty_reason}), {f.turn} turn, tools {'yes' if f.has_tools else 'no'}, "
        f"images {'yes' if f.has_images else 'no'}{effort}",
    ]
    if d.rule_traces:
        lines.append("rules, first match wins:")
        width = max(len(t.name) for t in d.rule_traces)
        for t in d.rule_traces:
            lines.append(f"  {'match' if t.matched else 'skip '}  {t.name:<{width}}  {t.reason}")
            if len(t.checks) > 1 or any(c.children for c in t.checks):
                lines += _check_lines(t.checks, 2)
    elif not cfg.rules:
        lines.append("rules: none configured")
    if d.source == "policy":
        lines.append(
            f"policy: profile {d.profile}, {d.difficulty} needs quality "
            f"{REQUIRED_QUALITY[d.difficulty]} or better"
        )
        if d.chances:
            who = {"learned": "your learned model", "prior": "the shipped prior"}.get(
                d.decider or "", "your learned model blended with the shipped prior"
            )
            lines.append(
                f"learned router: chance of a good enough answer from {who}"
                if d.decider
                else "learned router: chances below; the ladder decided"
            )
        chances = dict(d.chances)
        width = max(len(c.alias) for c in d.candidates)
        for c in d.candidates:
            place = f"{c.position:>2}" if c.position is not None else " -"
            chance = f"  p={chances[c.alias]:.2f}" if c.alias in chances else ""
            lines.append(f"  {place} {c.alias:<{width}}  {c.verdict:<8}  {c.reason}{chance}")
    lines += [f"note: {n}" for n in d.notes]
    return lines
