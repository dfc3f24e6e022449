"""Services that the OpenAI-compatible API tests load into real workers."""
from __future__ import annotations

import asyncio

import zeroserve


def _words(text: str) -> list[str]:
    words = text.split()
    return [w + " " for w in words[:-1]] + words[-1:]


@zeroserve.service(name="parrot")
class Parrot:
    """A chat model that says the last user message back, a word per token (``fail`` fails it
    before its first token, ``fail later`` after one), and a completion model that says the
    prompt back; both stop at ``max_tokens`` and at a word in ``stop``."""

    @zeroserve.api(openai="chat")
    async def chat(self, messages: list, max_tokens: int = 64, stop: list | None = None,
                   temperature: float = 1.0):
        last = [m["content"] for m in messages if m["role"] == "user"][-1]
        if last == "fail":
            raise ValueError("asked to fail")
        for index, word in enumerate(_words(last)[:max_tokens]):
            if last == "fail later" and index == 1:
                raise ValueError("asked to fail later")
            if stop and word.strip() in stop:
                return
            await asyncio.sleep(0)
            yield word

    @zeroserve.api(openai="completion")
    def complete(self, prompt: str, max_tokens: int = 64, stop: list | None = None):
        for word in _words(prompt)[:max_tokens]:
            if stop and word.strip() in stop:
                return
            yield word

    @zeroserve.api
    def plain(self, text: str) -> str:
        """Not an OpenAI model."""
        return text


@zeroserve.service(name="oneshot")
class OneShot:
    """A chat model that does not stream: it returns its whole answer at once."""

    @zeroserve.api(openai="chat")
    def answer(self, messages: list) -> str:
        return f"{len(messages)} messages"
