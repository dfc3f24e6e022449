"""The OpenAI-compatible API through real daemons, with the official ``openai`` client
unchanged: chat and completions, streaming and not, sync and async, usage, errors as the
client's own exceptions, and API keys as its ``api_key``."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import openai
import pytest
from cluster import ROOT, Cluster

from gateway.api_keys import digest, new_key

pytestmark = pytest.mark.integration

SERVICES = ROOT / "tests" / "openai_services.py"
HELLO = [{"role": "user", "content": "hello there wide world"}]


def _start(cluster: Cluster, env: dict | None = None) -> Cluster:
    cluster.broker()
    cluster.gateway(env=env)
    cluster.worker(f"{SERVICES}:Parrot")
    cluster.worker(f"{SERVICES}:OneShot")
    cluster.test_worker("Probe")
    cluster.wait_ready(3)
    return cluster


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    cluster = Cluster(tmp_path_factory.mktemp("openai"))
    try:
        yield _start(cluster)
    finally:
        cluster.stop()


@pytest.fixture
def client(gateway: Cluster):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def test_models_lists_the_declared_endpoints(client: openai.OpenAI) -> None:
    names = [m.id for m in client.models.list()]  # services in the order they registered
    assert sorted(names) == ["oneshot", "oneshot.answer", "parrot", "parrot.chat",
                             "parrot.complete"]
    assert names.index("parrot") < names.index("parrot.chat") < names.index("parrot.complete")
    assert client.models.retrieve("parrot.chat").owned_by == "zeroserve"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("parrot.plain")


def test_a_chat_completion_whole(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="parrot", messages=HELLO)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "parrot"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello there wide world"
    assert choice.finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        len(HELLO[0]["content"]), 4)
    assert answer.usage.total_tokens == len(HELLO[0]["content"]) + 4


def test_max_tokens_cuts_the_answer_with_length(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="parrot.chat", messages=HELLO, max_tokens=2)
    assert answer.choices[0].message.content == "hello there "
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 2


def test_a_chat_stream_comes_as_deltas_with_usage_last(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="parrot", messages=HELLO, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert texts == ["hello ", "there ", "wide ", "world"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1


def test_a_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="parrot", messages=HELLO, stream=True,
                                                 max_tokens=1))
    assert [c.choices[0].delta.content for c in chunks] == ["", "hello ", None]
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)


def test_completions_whole_and_streamed_with_stop(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="parrot", prompt="one two three four",
                                       stop=["three"])
    assert answer.object == "text_completion" and answer.choices[0].text == "one two "
    assert answer.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="parrot.complete", prompt="one two three",
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 13


def test_a_model_that_does_not_stream_answers_both_ways(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "s"}, *HELLO]
    answer = client.chat.completions.create(model="oneshot", messages=messages)
    assert answer.choices[0].message.content == "2 messages"
    chunks = list(client.chat.completions.create(model="oneshot", messages=messages,
                                                 stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["", "2 messages", None]


def test_the_async_client_streams_and_answers(gateway: Cluster) -> None:
    async def run() -> tuple[str, list[str]]:
        async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused",
                                      max_retries=0) as client:
            whole = await client.chat.completions.create(model="parrot", messages=HELLO)
            stream = await client.completions.create(model="parrot", prompt="a b c",
                                                     stream=True)
            texts = [c.choices[0].text async for c in stream]
            return whole.choices[0].message.content or "", texts
    whole, texts = asyncio.run(run())
    assert whole == "hello there wide world"
    assert texts == ["a ", "b ", "c", ""]


def test_unknown_models_are_not_found(client: openai.OpenAI) -> None:
    for model in ("nope", "parrot.complete", "probe", "parrot.plain"):
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model=model, messages=HELLO)
        assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError, match="not a completion model"):
        client.completions.create(model="parrot.chat", prompt="x")


def test_bad_input_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="parrot", messages=HELLO, temperature=5)
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="parrot", messages=[])
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model="parrot", messages=HELLO, n=3)
    with pytest.raises(openai.BadRequestError, match="stop"):  # stop's words must be strings
        client.chat.completions.create(model="parrot", messages=HELLO,
                                       extra_body={"stop": [1]})


def test_a_model_that_fails_is_a_server_error_before_or_during_the_stream(
        client: openai.OpenAI) -> None:
    failing = [{"role": "user", "content": "fail"}]
    with pytest.raises(openai.InternalServerError, match="asked to fail"):
        client.chat.completions.create(model="parrot", messages=failing)
    with pytest.raises(openai.InternalServerError, match="asked to fail"):
        list(client.chat.completions.create(model="parrot", messages=failing, stream=True))
    stream = client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "fail later"}], stream=True)
    seen = []
    with pytest.raises(openai.APIError, match="asked to fail later"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "fail "]  # the first token came before the error


def test_the_routes_around_keep_working(gateway: Cluster) -> None:
    assert gateway.get("/v1/services")[0] == 200
    assert gateway.post("/parrot/plain", {"text": "hi"})[1] == "hi"
    with urllib.request.urlopen(urllib.request.Request(
            f"{gateway.url}/v1/chat/completions", method="POST", data=json.dumps(
                {"model": "parrot", "messages": HELLO, "stream": True}).encode())) as answer:
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        body = answer.read()
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"data: ") == 7


def test_api_keys_are_the_clients_api_key(tmp_path: Path) -> None:
    key, other = new_key(), new_key()
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: chat, sha256: {digest(key)}, services: [parrot]}}\n"
                    f"  - {{name: other, sha256: {digest(other)}, services: [probe]}}\n")
    cluster = Cluster(tmp_path)
    try:
        _start(cluster, env={"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)})
        url = f"{cluster.url}/v1"
        with openai.OpenAI(base_url=url, api_key=key, max_retries=0) as client:
            assert client.chat.completions.create(
                model="parrot", messages=HELLO).choices[0].message.content
            assert [m.id for m in client.models.list()] == [
                "parrot", "parrot.chat", "parrot.complete"]
        with openai.OpenAI(base_url=url, api_key="zs_wrong", max_retries=0) as client, \
                pytest.raises(openai.AuthenticationError) as refused:
            client.chat.completions.create(model="parrot", messages=HELLO)
        assert refused.value.code == "invalid_api_key"
        with openai.OpenAI(base_url=url, api_key=other, max_retries=0) as client, \
                pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="parrot", messages=HELLO, stream=True)
    finally:
        cluster.stop()
