"""A fast fake OpenAI upstream for benchmarks: a fixed answer, or a stream of paced chunks.

Run as its own process: `python bench/upstream.py PORT`. A `"bench": {"chunks": N, "pace_ms": M}`
field in the request body (which pirouter and the pass-through forward untouched) shapes a
stream; the default is 64 chunks with no pacing.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A short benchmark answer."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()
CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'
)
LAST = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model",'
    b'"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":64,"total_tokens":76}}\n\n'
    b"data: [DONE]\n\n"
)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if b'"stream":true' not in body.replace(b" ", b""):
        return web.Response(body=ANSWER, content_type="application/json")
    shape = json.loads(body).get("bench") or {} if b'"bench"' in body else {}
    chunks = int(shape.get("chunks", 64))
    pace = float(shape.get("pace_ms", 0)) / 1000
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for _ in range(chunks):
        await response.write(CHUNK)
        if pace:
            await asyncio.sleep(pace)
    await response.write(LAST)
    return response


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
