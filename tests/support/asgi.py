"""Serve an ASGI app over real HTTP on 127.0.0.1 for the length of a test body."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette


def serve(app: Starlette, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Serve ``app`` with uvicorn on a free local port while ``body`` talks to it.

    uvicorn runs in the test's own event loop (``Server.serve`` as a task), so the app's
    lifespan and the requests share one loop and no thread has to be waited for."""

    async def main() -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                    raise AssertionError("uvicorn stopped during start-up")
                await asyncio.sleep(0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                return await body(client)
        finally:
            server.should_exit = True
            await task
            sock.close()

    return asyncio.run(main())
