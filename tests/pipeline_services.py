"""Services that call services, for tests/integration/test_composition.py."""
import asyncio

import numpy as np

import zeroserve


@zeroserve.service(name="tok")
class Tokenize:
    @zeroserve.api
    def split(self, text: str) -> list:
        return text.split()


@zeroserve.service(name="embed")
class Embed:
    @zeroserve.api(batchable=True, max_batch_size=64, max_latency_ms=5)
    def encode(self, x: np.ndarray) -> np.ndarray:
        return x * 2.0


@zeroserve.service(name="slow")
class Slow:
    @zeroserve.api
    async def wait(self, seconds: float, marker: str = "") -> str:
        if marker:
            with open(marker, "a") as f:
                f.write("ran\n")
        await asyncio.sleep(seconds)
        return "done"

    @zeroserve.api
    def fail(self, why: str) -> str:
        raise ValueError(why)


@zeroserve.service(name="rank")
class Rank:
    tok = zeroserve.depends(Tokenize)
    embed = zeroserve.depends("embed")
    slow = zeroserve.depends(Slow)
    nowhere = zeroserve.depends("nowhere")

    @zeroserve.api
    async def score(self, text: str) -> float:
        words = await self.tok.call("split", text=text)
        lengths = np.array([[len(w)] for w in words], dtype=np.float32)
        return float((await self.embed.call("encode", x=lengths)).sum())

    @zeroserve.api
    def score_sync(self, text: str) -> float:
        words = self.tok.call_sync("split", text=text)
        lengths = np.array([[len(w)] for w in words], dtype=np.float32)
        return float(self.embed.call_sync("encode", x=lengths).sum())

    @zeroserve.api
    async def via_slow(self, seconds: float, marker: str = "") -> str:
        return await self.slow.call("wait", seconds=seconds, marker=marker)

    @zeroserve.api
    async def via_failing(self, why: str) -> str:
        return await self.slow.call("fail", why=why)

    @zeroserve.api
    async def caught(self, why: str) -> dict:
        try:
            await self.slow.call("fail", why=why)
        except zeroserve.DependencyError as exc:
            return {"service": exc.service, "endpoint": exc.endpoint, "status": exc.status}
        return {}

    @zeroserve.api
    async def bad_input(self) -> str:
        return await self.tok.call("split", words="not the right input")

    @zeroserve.api
    async def via_nowhere(self) -> str:
        return await self.nowhere.call("anything")


@zeroserve.service(name="fact")
class Factorial:
    me = zeroserve.depends("fact")

    @zeroserve.api
    async def fact(self, n: int) -> int:
        if n <= 1:
            return 1
        await asyncio.sleep(0.001)
        return n * await self.me.call("fact", n=n - 1)


@zeroserve.service(name="ping_a")
class PingA:
    other = zeroserve.depends("ping_b")

    @zeroserve.api
    async def bounce(self, n: int) -> int:
        return 0 if n <= 0 else 1 + await self.other.call("bounce", n=n - 1)


@zeroserve.service(name="ping_b")
class PingB:
    other = zeroserve.depends("ping_a")

    @zeroserve.api
    async def bounce(self, n: int) -> int:
        return 0 if n <= 0 else 1 + await self.other.call("bounce", n=n - 1)


@zeroserve.service(name="words")
class Words:
    @zeroserve.api
    async def each(self, text: str):
        for word in text.split():
            yield word

    @zeroserve.api
    async def fails_after_one(self, text: str):
        yield text
        raise ValueError("no more words")


@zeroserve.service(name="shout")
class Shout:
    words = zeroserve.depends(Words)

    @zeroserve.api
    async def upper(self, text: str) -> list:
        return [w.upper() async for w in self.words.stream("each", text=text)]

    @zeroserve.api
    async def first(self, text: str) -> str:
        async for word in self.words.stream("each", text=text):
            return word  # leaving early cancels the callee's stream
        return ""

    @zeroserve.api
    async def failing(self, text: str) -> list:
        return [w async for w in self.words.stream("fails_after_one", text=text)]

    @zeroserve.api
    async def relay(self, text: str):
        async for word in self.words.stream("each", text=text):
            yield word[::-1]
