"""A text service: string in, string out, with a sync and an async endpoint.

    zeroserve serve examples/text.py:Text
    curl -s localhost:8000/text/reverse -d '{"text": "hello"}'
"""
import asyncio

import zeroserve


@zeroserve.service(name="text")
class Text:
    def __init__(self) -> None:
        self.calls = 0

    @zeroserve.api
    def reverse(self, text: str) -> str:
        self.calls += 1
        return text[::-1]

    @zeroserve.api
    async def shout(self, text: str, times: int = 1) -> dict:
        await asyncio.sleep(0)
        return {"text": " ".join([text.upper()] * times), "length": len(text)}
