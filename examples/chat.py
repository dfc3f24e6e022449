"""A chat model that really generates: a character-level n-gram (Markov) model, fitted when the
worker starts on the text in examples/data/ (a few paragraphs of Lewis Carroll's *Alice's
Adventures in Wonderland*, 1865, in the public domain), served as an OpenAI chat and
completion model.

    zeroserve serve examples/chat.py:Chat
    curl -N localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{
      "model": "chat", "stream": true, "max_tokens": 80, "seed": 7,
      "messages": [{"role": "user", "content": "Down, down, down."}]}'

The reply continues the last user message (the prompt, for a completion) one character at a
time: each character is one token, drawn from the counts of what followed the last
``ORDER`` characters in the text (or fewer, where the text never had them). ``temperature``
sharpens (towards 0: always the most frequent) or flattens the counts, ``top_p`` keeps the
most likely characters that make up that share of them, ``seed`` makes the draw
reproducible, ``max_tokens`` bounds the characters and ``stop`` ends the reply before the
first stop string (which is not sent).
"""
from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import zeroserve

ORDER = 6  # characters of context
DATA = Path(__file__).resolve().parent / "data"


class CharModel:
    """Counts of the character that follows each context of up to ``order`` characters."""

    def __init__(self, text: str, order: int = ORDER) -> None:
        self.order = order
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        for index, char in enumerate(text):
            for length in range(min(order, index) + 1):
                self.counts[text[index - length:index]][char] += 1

    @classmethod
    def fit(cls, folder: Path = DATA, order: int = ORDER) -> CharModel:
        """The model of every ``*.txt`` file of ``folder`` (whitespace runs made one space
        or one blank line)."""
        paragraphs = []
        for path in sorted(folder.glob("*.txt")):
            paragraphs += [" ".join(p.split()) for p in path.read_text().split("\n\n")]
        return cls("\n\n".join(p for p in paragraphs if p), order)

    def next_char(self, context: str, rng: random.Random, temperature: float,
                  top_p: float) -> str:
        """One character to follow ``context``."""
        for length in range(min(self.order, len(context)), -1, -1):
            counts = self.counts.get(context[len(context) - length:])
            if counts:
                break
        ranked = counts.most_common()
        if temperature <= 0:
            return ranked[0][0]
        top = math.log(ranked[0][1])
        weights = [math.exp((math.log(n) - top) / temperature) for _, n in ranked]
        if top_p < 1.0:
            total, kept = sum(weights), 0
            running = 0.0
            while kept < len(weights) and running < top_p * total:
                running += weights[kept]
                kept += 1
            ranked, weights = ranked[:max(kept, 1)], weights[:max(kept, 1)]
        return rng.choices([c for c, _ in ranked], weights)[0]

    def generate(self, prompt: str, max_tokens: int, temperature: float = 0.8,
                 top_p: float = 1.0, stop: list[str] | None = None,
                 seed: int | None = None) -> Iterator[str]:
        """The characters that continue ``prompt``, one at a time (at most ``max_tokens``),
        up to the first of ``stop``. Characters that may begin a stop string are held back
        until they cannot."""
        rng = random.Random(seed)
        stops = [s for s in stop or [] if s]
        context, held, sent = prompt, "", 0
        while sent + len(held) < max_tokens:
            char = self.next_char(context, rng, temperature, top_p)
            context = (context + char)[-self.order:]
            held += char
            found = [held.find(s) for s in stops if s in held]
            if found:
                yield from held[:min(found)]
                return
            keep = max((k for s in stops for k in range(1, min(len(s), len(held)) + 1)
                        if held.endswith(s[:k])), default=0)
            for char in held[:len(held) - keep]:
                yield char
                sent += 1
            held = held[len(held) - keep:]
        yield from held


@zeroserve.service(name="chat")
class Chat:
    """The character model as an OpenAI chat model (``chat``) and completion model."""

    def __init__(self) -> None:
        self.model = CharModel.fit()

    @zeroserve.api(openai="chat")
    def reply(self, messages: list, max_tokens: int = 128, temperature: float = 0.8,
              top_p: float = 1.0, stop: list | None = None, seed: int | None = None):
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        yield from self.model.generate(users[-1] if users else "", max_tokens, temperature,
                                       top_p, stop, seed)

    @zeroserve.api(openai="completion")
    def complete(self, prompt: str, max_tokens: int = 128, temperature: float = 0.8,
                 top_p: float = 1.0, stop: list | None = None, seed: int | None = None):
        yield from self.model.generate(prompt, max_tokens, temperature, top_p, stop, seed)
