"""`pirouter init`: find what the user has, and write a commented config.toml for it.

What it looks for: Ollama (`/api/tags` at $OLLAMA_HOST or its default port, with each model's
capabilities from `/api/show`), OpenAI-compatible local servers on their default ports (LM
Studio, llama.cpp's server, vLLM: `/v1/models`), and the key variables of well-known clouds.
Local servers are asked with short timeouts, all at once; a cloud is offered when its variable
is set (its key is never read into the file: the file names the variable).

What it writes, with tomlkit so later edits (`models add`, `config set`, `edit.py`) keep every
comment: each provider found and its models, with quality tiers (local models by parameter
count; cloud models from KNOWN, with their published prices), the agent routing defaults (turn
kinds, session affinity), the learned router with the features it learns from, and the
explicit-override rule. Only models a provider lists are written: when every provider found is
declined, none is (the file says how to add them); when nothing is found at all, FALLBACK's
(Ollama's usual models, for when it runs).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.items import Table

PROBE_S = 1.5  # how long a local server may take to answer its listing
BIND = "127.0.0.1:11435"  # where the written config listens (the daemon's default address)
OLLAMA_DEFAULT = "http://127.0.0.1:11434"
# OpenAI-compatible servers people run locally, on their default ports: (table, name, URL)
LOCAL_SERVERS: tuple[tuple[str, str, str], ...] = (
    ("lmstudio", "LM Studio", "http://127.0.0.1:1234"),
    ("llamacpp", "llama.cpp server", "http://127.0.0.1:8080"),
    ("vllm", "vLLM", "http://127.0.0.1:8000"),
)


@dataclass(frozen=True, slots=True)
class Known:
    """A cloud model whose tier and price we know (USD per million tokens, as published)."""

    model_id: str
    alias: str
    quality: str
    input_per_m: float
    output_per_m: float
    context_window: int
    vision: bool = True


# (table, type, base URL, key variable, name, models): prices as the providers publish them;
# a comment in the file says to check them
CLOUDS: tuple[tuple[str, str, str, str, str, tuple[Known, ...]], ...] = (
    (
        *("openai", "openai", "https://api.openai.com", "OPENAI_API_KEY", "OpenAI"),
        (
            Known("gpt-4o-mini", "gpt-4o-mini", "standard", 0.15, 0.60, 128_000),
            Known("gpt-4.1", "gpt-4.1", "strong", 2.00, 8.00, 1_047_576),
        ),
    ),
    (
        *("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        "Anthropic",
        (
            Known("claude-haiku-4-5", "haiku", "standard", 1.00, 5.00, 200_000),
            Known("claude-sonnet-4-5", "sonnet", "strong", 3.00, 15.00, 200_000),
            Known("claude-opus-4-5", "opus", "premium", 5.00, 25.00, 200_000),
        ),
    ),
    (
        *("openrouter", "openai", "https://openrouter.ai/api", "OPENROUTER_API_KEY"),
        "OpenRouter",
        (
            Known("openai/gpt-4o-mini", "or-gpt-4o-mini", "standard", 0.15, 0.60, 128_000),
            Known(
                "anthropic/claude-sonnet-4.5", "or-claude-sonnet", "strong", 3.00, 15.00, 200_000
            ),
        ),
    ),
    (
        *("groq", "openai", "https://api.groq.com/openai", "GROQ_API_KEY", "Groq"),
        (
            Known("llama-3.1-8b-instant", "groq-llama-8b", "basic", 0.05, 0.08, 131_072, False),
            Known(
                "llama-3.3-70b-versatile", "groq-llama-70b", "standard", 0.59, 0.79, 131_072, False
            ),
        ),
    ),
    (
        *("deepseek", "openai", "https://api.deepseek.com", "DEEPSEEK_API_KEY", "DeepSeek"),
        (Known("deepseek-chat", "deepseek-chat", "standard", 0.28, 0.42, 128_000, False),),
    ),
    (
        *("mistral", "openai", "https://api.mistral.ai", "MISTRAL_API_KEY", "Mistral"),
        (
            Known("mistral-small-latest", "mistral-small", "standard", 0.10, 0.30, 128_000),
            Known("mistral-large-latest", "mistral-large", "strong", 2.00, 6.00, 128_000),
        ),
    ),
)


@dataclass(slots=True)
class FoundModel:
    alias: str
    model_id: str
    quality: str
    local: bool
    input_per_m: float = 0.0
    output_per_m: float = 0.0
    context_window: int | None = None
    tools: bool | None = None
    vision: bool | None = None
    embedding: bool = False


@dataclass(slots=True)
class Found:
    """A provider found: its table name, type, URL, key variable, and models."""

    name: str
    kind: str
    base_url: str
    key_env: str | None
    how: str  # what was seen, for the prompt and the file's comment
    models: list[FoundModel] = field(default_factory=list)


def _get(url: str, body: Mapping[str, Any] | None = None) -> Any:
    """GET (or POST `body`) JSON from a local server, or None when it does not answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=PROBE_S) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def local_quality(name: str, parameter_size: str | None = None) -> str:
    """A local model's tier by its parameter count: under 7B basic, to 30B standard, above
    strong (`llama3.2:3b` basic, `qwen2.5-coder:7b` standard, `llama3.3:70b` strong)."""
    match = _SIZE.search(parameter_size or "") or _SIZE.search(name)
    if match is None:
        return "standard"
    size = float(match[1])
    return "basic" if size < 7 else "standard" if size <= 30 else "strong"


def _alias(model_id: str, taken: set[str]) -> str:
    name = model_id.rsplit("/", maxsplit=1)[-1]
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-").lower() or "model"
    alias, n = base, 2
    while alias in taken:
        alias, n = f"{base}-{n}", n + 1
    taken.add(alias)
    return alias


def _ollama(base: str) -> Found | None:
    tags = _get(f"{base}/api/tags")
    if not isinstance(tags, dict) or not isinstance(tags.get("models"), list):
        return None
    found = Found("ollama", "ollama", base, None, f"Ollama answering at {base}")
    for item in tags["models"]:
        name = str(item.get("name") or item.get("model") or "")
        if not name:
            continue
        details = item.get("details") or {}
        show = _get(f"{base}/api/show", {"model": name}) or {}
        caps = show.get("capabilities") if isinstance(show, dict) else None
        info = show.get("model_info") if isinstance(show, dict) else None
        context = None
        if isinstance(info, dict):
            lengths = [v for k, v in info.items() if k.endswith(".context_length")]
            context = int(lengths[0]) if lengths and isinstance(lengths[0], int) else None
        embedding = "embed" in name if caps is None else "completion" not in caps
        found.models.append(
            FoundModel(
                alias=name.replace(":", "-"),
                model_id=name,
                quality=local_quality(name, details.get("parameter_size")),
                local=True,
                context_window=context,
                tools=None if caps is None else "tools" in caps,
                vision=None if caps is None else "vision" in caps,
                embedding=embedding,
            )
        )
    return found


def _openai_local(table: str, what: str, base: str) -> Found | None:
    listing = _get(f"{base}/v1/models")
    if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
        return None
    found = Found(table, "openai", base, None, f"{what} answering at {base}")
    for item in listing["data"]:
        model_id = str(item.get("id") or "") if isinstance(item, dict) else ""
        if model_id:
            found.models.append(
                FoundModel(
                    alias=model_id,
                    model_id=model_id,
                    quality=local_quality(model_id),
                    local=True,
                    embedding="embed" in model_id.lower(),
                )
            )
    return found


def discover(environ: Mapping[str, str]) -> list[Found]:
    """Every provider found: local servers (asked at once), then clouds whose key is set."""
    taken: set[str] = set()
    host = environ.get("OLLAMA_HOST", "").strip()
    ollama = OLLAMA_DEFAULT
    if host:
        ollama = host if "://" in host else f"http://{host}"
        if not re.search(r":\d+$", ollama.split("://", 1)[1]):
            ollama += ":11434"
    with ThreadPoolExecutor(max_workers=1 + len(LOCAL_SERVERS)) as pool:
        ollama_found = pool.submit(_ollama, ollama.rstrip("/"))
        servers = [
            pool.submit(_openai_local, table, what, base) for table, what, base in LOCAL_SERVERS
        ]
        local = [ollama_found.result(), *(s.result() for s in servers)]
    out = [f for f in local if f is not None and f.models]
    for found in out:  # aliases made unique here, in order, not by the threads
        for m in found.models:
            m.alias = _alias(m.alias, taken)
    for table, kind, base, env, what, known in CLOUDS:
        if environ.get(env):
            found = Found(table, kind, base, env, f"{what}: ${env} is set")
            for k in known:
                found.models.append(
                    FoundModel(
                        alias=_alias(k.alias, taken),
                        model_id=k.model_id,
                        quality=k.quality,
                        local=False,
                        input_per_m=k.input_per_m,
                        output_per_m=k.output_per_m,
                        context_window=k.context_window,
                        tools=True,
                        vision=k.vision,
                    )
                )
            out.append(found)
    return out


# Written when nothing at all is found (not when what was found is declined).
FALLBACK = Found(
    "ollama",
    "ollama",
    OLLAMA_DEFAULT,
    None,
    "nothing found: Ollama's usual models, for when it runs (`ollama pull llama3.2:3b`)",
    [
        FoundModel("llama3.2-local", "llama3.2:3b", "basic", True, context_window=8192),
        FoundModel(
            "qwen2.5-coder-local",
            "qwen2.5-coder:7b",
            "standard",
            True,
            context_window=32768,
            tools=True,
        ),
    ],
)


# The file's comment when no provider was taken: how to add one and its models.
NOTHING_CHOSEN = (
    "No provider yet: add one and its models, e.g.",
    "  pirouter providers add ollama --base-url http://127.0.0.1:11434",
    "  pirouter models add llama3.2 --provider ollama --model-id llama3.2:3b --local",
    "or write [providers.<name>] and [models.<alias>] tables (see config.example.toml).",
)


def document(chosen: list[Found]) -> tomlkit.TOMLDocument:
    """The config for exactly the providers chosen: none chosen, no provider and no model (the
    file says how to add them; `pirouter run` wants one model at least)."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("pirouter's config, written by `pirouter init`. Edit it freely:"))
    doc.add(tomlkit.comment("`pirouter providers add|remove`, `pirouter models add|enable|"))
    doc.add(tomlkit.comment("disable` and `pirouter config set KEY VALUE` change it in place,"))
    doc.add(tomlkit.comment("keeping comments; `pirouter check-config` checks it. Every key is"))
    doc.add(tomlkit.comment("explained in config.example.toml."))
    doc.add(tomlkit.nl())
    server = tomlkit.table()
    server.add(tomlkit.comment(f"Only this machine can reach it; clients use http://{BIND}"))
    server["bind"] = BIND
    doc["server"] = server
    routing = tomlkit.table()
    routing.add(tomlkit.comment("Agent-aware: a turn's difficulty comes from its latest"))
    routing.add(tomlkit.comment("instruction, tool results stay on the model that started the"))
    routing.add(tomlkit.comment("step, side calls go to the cheapest capable model."))
    routing["turns"] = True
    routing.add(tomlkit.comment("The learned router: each request goes to the cheapest model"))
    routing.add(tomlkit.comment("likely to answer it well; `pirouter learn` trains it on your"))
    routing.add(tomlkit.comment("own traffic, as the ledger records it."))
    routing["learned"] = True
    doc["routing"] = routing
    learning = tomlkit.table()
    learning.add(tomlkit.comment("Keep each request's hashed features (never its text) in the"))
    learning.add(tomlkit.comment("ledger, so `pirouter learn` can train on every request, even"))
    learning.add(tomlkit.comment("those whose prompts are not stored."))
    learning["keep_features"] = True
    doc["learning"] = learning
    affinity = tomlkit.table()
    affinity.add(tomlkit.comment("Keep conversations on their model (prompt caches stay warm)."))
    affinity["enabled"] = True
    doc["affinity"] = affinity
    if not chosen:
        doc.add(tomlkit.nl())
        for line in NOTHING_CHOSEN:
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
    providers = tomlkit.table(is_super_table=True)
    models = tomlkit.table(is_super_table=True)
    for found in chosen:
        table = tomlkit.table()
        table.add(tomlkit.comment(found.how))
        if found.kind != found.name:
            table["type"] = found.kind
        table["base_url"] = found.base_url
        if found.key_env:
            table["api_key_env"] = found.key_env
            table.add(tomlkit.comment("its models' prices: USD per million tokens as published;"))
            table.add(tomlkit.comment("check them against your account's price page"))
        providers[found.name] = table
        for m in found.models:
            models[m.alias] = _model_table(found, m)
    if chosen:
        doc["providers"] = providers
        doc["models"] = models
    rule = tomlkit.table()
    rule.add(tomlkit.comment("`x-pirouter-route: <alias>` sends a request to that model."))
    rule["name"] = "explicit-override"
    when = tomlkit.inline_table()
    header = tomlkit.inline_table()
    header.update({"name": "x-pirouter-route", "any_value": True})
    when["header"] = header
    rule["when"] = when
    then = tomlkit.inline_table()
    then.update({"primary": "$header:x-pirouter-route", "cascade": tomlkit.array()})
    rule["then"] = then
    rules = tomlkit.aot()
    rules.append(rule)
    doc["rules"] = rules
    return doc


def _model_table(found: Found, m: FoundModel) -> Table:
    table = tomlkit.table()
    table["provider"] = found.name
    table["model_id"] = m.model_id
    if m.embedding:
        table["kind"] = "embedding"
    table["quality"] = m.quality
    if m.local:
        table["local"] = True
    else:
        table["input_per_m"] = m.input_per_m
        table["output_per_m"] = m.output_per_m
    if m.context_window:
        table["context_window"] = m.context_window
    if m.tools:
        table["supports_tools"] = True
    if m.vision:
        table["supports_vision"] = True
    return table
