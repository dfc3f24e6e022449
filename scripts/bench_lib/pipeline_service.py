"""The services of ``scripts/bench pipeline``: a three-stage pipeline of cheap stages
(``pipeline.run`` calls ``inc.step`` then ``dbl.step`` through the broker) and the same work
in one endpoint (``whole.run``)."""
import zeroserve


def _inc(x: list) -> list:
    return [v + 1 for v in x]


def _dbl(x: list) -> list:
    return [v * 2 for v in x]


@zeroserve.service(name="inc")
class Inc:
    @zeroserve.api
    def step(self, x: list) -> list:
        return _inc(x)


@zeroserve.service(name="dbl")
class Dbl:
    @zeroserve.api
    def step(self, x: list) -> list:
        return _dbl(x)


@zeroserve.service(name="pipeline")
class Pipeline:
    inc = zeroserve.depends(Inc)
    dbl = zeroserve.depends(Dbl)

    @zeroserve.api
    async def run(self, x: list) -> list:
        return await self.dbl.call("step", x=await self.inc.call("step", x=x))


@zeroserve.service(name="whole")
class Whole:
    @zeroserve.api
    def run(self, x: list) -> list:
        return _dbl(_inc(x))
