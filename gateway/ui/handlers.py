"""``GET /ui`` and ``GET /ui/data`` on the gateway: the live page and its data.

The page is public (it holds no data; with API keys on it asks for one); its data call needs
a key like every other route, and shows only the services that key may use.
"""
from __future__ import annotations

from broker.stats import TIME_BUCKETS_S
from gateway.errors import RequestFailed
from gateway.json_body import dump_json
from gateway.rest import BaseHandler
from gateway.ui.page import PAGE, data_answer, page_headers
from zeroserve.wire.envelope import Status
from zeroserve.wire.frontend import ControlOp

_PAGE = PAGE.encode()


class UiPageHandler(BaseHandler):
    """``GET /ui``: the live page (:mod:`gateway.ui.page`)."""

    metric_route = "ui"

    def prepare(self) -> None:
        pass  # public: the page holds no data, and asks for a key where its data call needs one

    def get(self) -> None:
        for name, value in page_headers().items():
            self.set_header(name, value)
        self.finish(_PAGE)


class UiDataHandler(BaseHandler):
    """``GET /ui/data``: the broker's statistics for the page, limited to the services the
    caller's key may use; 503 when the broker does not answer."""

    metric_route = "ui"

    async def get(self) -> None:
        try:
            stats = await self.link.control(ControlOp.STATS, timeout_s=2.0)
        except TimeoutError:
            raise RequestFailed(Status.NO_WORKER, "the broker does not answer") from None
        if self.identity is not None:
            stats = {**stats,
                     "workers": [w for w in stats.get("workers", [])
                                 if self.identity.allows(w["service"])],
                     "endpoints": {name: e for name, e in stats.get("endpoints", {}).items()
                                   if self.identity.allows(name.partition(".")[0])}}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(dump_json(data_answer(stats, TIME_BUCKETS_S)))


def ui_routes(args: dict) -> list:
    """The page's routes (``args`` from :func:`gateway.rest.handler_args`)."""
    return [(r"/ui", UiPageHandler, args), (r"/ui/data", UiDataHandler, args)]
