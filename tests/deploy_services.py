"""A test service for deployments: it tells which GPUs its worker was given."""
import os

import zeroserve


@zeroserve.service(name="devices")
class Devices:
    @zeroserve.api
    def visible(self) -> str:
        """This worker's CUDA_VISIBLE_DEVICES ("unset" when the launcher set none)."""
        return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")

    @zeroserve.api
    def worker(self) -> dict:
        """Which worker answered (its pid) and what it sees."""
        return {"pid": os.getpid(), "devices": self.visible()}
