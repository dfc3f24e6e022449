"""The worker of ``scripts/bench --profile broker-ceiling``: one endpoint that returns its input,
so that what the profile measures is the broker (and the worker's loop), not a model."""
import zeroserve


@zeroserve.service(name="echo")
class Echo:
    @zeroserve.api
    def echo(self, x: bytes) -> bytes:
        return x
