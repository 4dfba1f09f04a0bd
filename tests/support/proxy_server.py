"""Run the real proxy app (``proxy.app.build_app``) on a free loopback port, for tests."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.app import SERVER_KWARGS, build_app
from proxy.http.exchange import MeteringHooks
from proxy.http.forward import MeteringErrorCallback
from proxy.http.server import GuardedSockSite, bind, bound_port
from proxy.settings import Settings


def settings_for(upstream_url: str, **sections: dict[str, Any]) -> Settings:
    """Settings pointing at ``upstream_url``; keyword args override whole sections' keys."""
    data: dict[str, Any] = {"upstream": {"url": upstream_url}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return Settings.model_validate(data)


class ProxyServer:
    def __init__(
        self,
        settings: Settings,
        *,
        hooks: MeteringHooks | None = None,
        on_metering_error: MeteringErrorCallback | None = None,
        app: web.Application | None = None,
    ) -> None:
        self.settings = settings
        self.app = (
            app
            if app is not None
            else build_app(settings, hooks=hooks, on_metering_error=on_metering_error)
        )
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client's ``OPENAI_BASE_URL`` would be."""
        return self.url + "/v1"

    async def start(self) -> ProxyServer:
        # The same server as ``openai-meter serve`` (proxy.http.server): idle and header timeouts.
        self._runner = web.AppRunner(
            self.app,
            shutdown_timeout=self.settings.server.shutdown_grace_s,
            keepalive_timeout=self.settings.server.idle_timeout_s,
            **SERVER_KWARGS,  # type: ignore[arg-type]
        )
        await self._runner.setup()
        (sock,) = bind("127.0.0.1", 0)
        site = GuardedSockSite(
            self._runner, sock, header_timeout_s=self.settings.server.header_timeout_s
        )
        await site.start()
        self.port = bound_port([sock])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ProxyServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
