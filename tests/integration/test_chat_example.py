"""examples/chat.py as a user runs it: the character model answers through the OpenAI
client, its text comes from the text it was fitted on, and a seed makes it reproducible."""
from __future__ import annotations

import openai
import pytest
from cluster import EXAMPLES, Cluster

pytestmark = pytest.mark.integration

PROMPT = [{"role": "user", "content": "Down, down, down."}]


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("chat"))
    try:
        cluster.broker()
        cluster.gateway()
        cluster.worker("chat.py:Chat")
        cluster.worker("chat.py:Chat")  # a seed gives the same text whichever worker draws
        cluster.wait_ready(2)
        yield openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="none", max_retries=0)
    finally:
        cluster.stop()


def _words() -> set[str]:
    return {w.strip('.,;:!?()"\'') for path in (EXAMPLES / "data").glob("*.txt")
            for w in path.read_text().split()}


def test_the_model_generates_text_from_its_book(chat: openai.OpenAI) -> None:
    answer = chat.chat.completions.create(model="chat", messages=PROMPT, max_tokens=120,
                                          seed=11)
    text = answer.choices[0].message.content or ""
    assert len(text) == 120 and answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 120
    words = [w.strip('.,;:!?()"\'') for w in text.split()[1:-1]]  # the ends may be cut
    known = _words()
    assert sum(w in known for w in words) >= 0.8 * len(words)  # a Markov chain, not noise


def test_a_seed_reproduces_the_answer_streamed_or_not(chat: openai.OpenAI) -> None:
    def streamed(seed: int) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chat.chat.completions.create(
            model="chat", messages=PROMPT, max_tokens=60, seed=seed, stream=True))
    whole = chat.chat.completions.create(model="chat", messages=PROMPT, max_tokens=60, seed=5)
    assert streamed(5) == streamed(5) == whole.choices[0].message.content
    assert streamed(6) != streamed(5)


def test_temperature_zero_stop_and_completions(chat: openai.OpenAI) -> None:
    first = chat.completions.create(model="chat", prompt="Alice was", max_tokens=40,
                                    temperature=0)
    again = chat.completions.create(model="chat", prompt="Alice was", max_tokens=40,
                                    temperature=0, seed=99)
    assert first.choices[0].text == again.choices[0].text  # greedy: no draw at all
    cut = chat.completions.create(model="chat", prompt="Alice was", max_tokens=40,
                                  temperature=0, stop=[" to"])
    assert first.choices[0].text.startswith(cut.choices[0].text)
    assert " to" in first.choices[0].text and " to" not in cut.choices[0].text
    assert cut.choices[0].finish_reason == "stop"
