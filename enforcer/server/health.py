"""The service's health, as grpc.health.v1 reports it: SERVING only while
every dependency a call needs is healthy (the audit log, the state store).
Each reports its own transitions; calls are refused while one is down, so
health must say so too, never SERVING over a service that refuses all."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

log = logging.getLogger(__name__)


class Health:
    def __init__(self, servicer: health.aio.HealthServicer, names: tuple[str, ...]) -> None:
        self._servicer = servicer
        self._names = names
        self._down: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._publish()

    def down(self, part: str, why: str) -> None:
        """From any thread: `part` cannot serve calls."""
        self._schedule(part, why)

    def up(self, part: str) -> None:
        """From any thread: `part` serves calls again."""
        self._schedule(part, None)

    def _schedule(self, part: str, why: str | None) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._apply, part, why)
        except RuntimeError:
            pass  # the loop is closed: shutting down

    def _apply(self, part: str, why: str | None) -> None:
        was = bool(self._down)
        if why is None:
            if self._down.pop(part, None) is not None:
                log.warning("%s healthy again", part)
        elif part not in self._down:
            self._down[part] = why
            log.critical("%s failed: health is NOT_SERVING, calls are refused: %s", part, why)
        if was != bool(self._down):
            assert self._loop is not None
            self._loop.create_task(self._publish())

    async def _publish(self) -> None:
        status = (health_pb2.HealthCheckResponse.NOT_SERVING if self._down
                  else health_pb2.HealthCheckResponse.SERVING)
        for name in self._names:
            await self._servicer.set(name, status)
