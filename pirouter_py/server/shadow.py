"""Shadow checks ([learning] shadow_rate): after an answer from a model stronger than the cheapest
local capable one has been sent, a sampled share of requests is asked of that local model too, and
its answer judged (answer checks; `shadow_judge`'s verdict on agreement with the answer given,
when set). The label goes to the ledger's `shadow` table for `pirouter learn`.

Only a local model is asked (it costs nothing), only while it is not cooling or at a limit, and
one shadow call at a time: shadows never compete with the traffic they learn from. Nothing of it
reaches the client, the request's row, budgets or stats.
"""

from __future__ import annotations

import asyncio
import random

from pirouter_py.cascade import Shadow
from pirouter_py.ledger import feedback
from pirouter_py.observe.log import get_logger
from pirouter_py.record import STATUS_OK, RequestRecord
from pirouter_py.routing import policy
from pirouter_py.routing.decide import Decision
from pirouter_py.server.state import Snapshot, State
from pirouter_py.types import ChatRequest

log = get_logger("pirouter.shadow")


def candidate(snapshot: Snapshot, decision: Decision | None, made: RequestRecord) -> str | None:
    """The local model a shadow check would ask about this request, or None."""
    config = snapshot.config
    if decision is None or made.status != STATUS_OK or made.final not in config.models:
        return None
    answered = config.models[made.final]
    fitting = policy.capable(config, decision.features, decision.difficulty, decision.profile)
    tried = {a.alias for a in made.attempts}
    for alias, model in sorted(fitting, key=lambda am: (am[1].cost, am[1].rank, am[0])):
        if not model.local or alias in tried:
            continue
        if model.rank < answered.rank or model.cost < answered.cost:
            return alias
    return None


def maybe(
    state: State,
    snapshot: Snapshot,
    decision: Decision | None,
    chat: ChatRequest,
    answer: str | None,
    made: RequestRecord,
) -> None:
    """Start a shadow check for this finished request when the sample and the state allow."""
    rate = snapshot.config.learning.shadow_rate
    if rate <= 0 or random.random() >= rate or state.shadowing or decision is None:
        return
    alias = candidate(snapshot, decision, made)
    if alias is None or snapshot.traffic.busy(alias, made.estimated_tokens) is not None:
        return
    state.shadowing = True
    run = _run(state, snapshot, decision, chat, answer, made, alias)
    task = asyncio.get_running_loop().create_task(run)
    state.shadow_tasks.add(task)
    task.add_done_callback(state.shadow_tasks.discard)


async def _run(
    state: State,
    snapshot: Snapshot,
    decision: Decision,
    chat: ChatRequest,
    answer: str | None,
    made: RequestRecord,
    alias: str,
) -> None:
    config = snapshot.config
    try:
        verdict = await Shadow(snapshot.cascade).check(
            alias,
            chat,
            decision.escalation or config.cascade,
            answer,
            config.learning.shadow_judge,
        )
        attempt = verdict.attempt
        log.info(
            "shadow_check",
            request_id=made.request_id,
            model=alias,
            answered_by=made.final,
            score=verdict.score,
            outcome=verdict.outcome,
        )
        if verdict.score is not None and state.ledger_path is not None:
            await asyncio.to_thread(
                feedback.record_shadow,
                state.ledger_path,
                made.request_id,
                alias,
                verdict.score,
                verdict.outcome,
                (attempt.input_tokens, attempt.output_tokens),
                attempt.latency_ms,
                state.ledger_url,
            )
    except Exception:  # a bug here must never touch the daemon's traffic
        log.exception("shadow_check_failed", request_id=made.request_id, model=alias)
    finally:
        state.shadowing = False
