"""OpenAI's requests, answers, chunks and errors (gateway.openai_wire), and which endpoints
serve which model names (gateway.openai_models): pure."""
from __future__ import annotations

import json

import pytest

from gateway.openai_models import model_names, resolve
from gateway.openai_wire import (
    DONE,
    Answer,
    OpenAIError,
    completion,
    error_body,
    finish_chunk,
    finish_reason,
    parse_request,
    role_chunk,
    sse,
    text_chunk,
    token_text,
    usage_chunk,
)
from zeroserve.schema import Field
from zeroserve.wire.descriptions import EndpointDescription, ServiceDescription

USER = [{"role": "user", "content": "hello"}]


def test_a_chat_request_gives_the_messages_and_the_declared_fields_only() -> None:
    request = parse_request("chat", {
        "model": "chat", "messages": [{"role": "system", "content": "be brief"}, *USER],
        "max_tokens": 8, "temperature": 0, "seed": 3, "logit_bias": {"1": 2}, "user": "u"})
    assert request.model == "chat" and not request.stream and request.max_tokens == 8
    inputs = request.inputs({"messages", "max_tokens", "temperature", "seed"})
    assert inputs == {"messages": [{"role": "system", "content": "be brief"}, *USER],
                      "max_tokens": 8, "temperature": 0.0, "seed": 3}
    assert isinstance(inputs["temperature"], float)
    assert request.prompt_tokens == len("be brief") + len("hello")


def test_text_parts_become_text_and_stop_is_always_a_list() -> None:
    request = parse_request("chat", {"model": "m", "stop": "\n", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "ab"},
                                     {"type": "text", "text": "cd"}]}]})
    assert request.text_input == [{"role": "user", "content": "abcd"}]
    assert request.fields["stop"] == ["\n"]


def test_a_completion_request_takes_a_prompt_or_a_list_of_one() -> None:
    assert parse_request("completion", {"model": "m", "prompt": "once"}).inputs(set()) == {
        "prompt": "once"}
    assert parse_request("completion", {"model": "m", "prompt": ["once"]}).text_input == "once"


def test_max_completion_tokens_is_max_tokens_and_usage_needs_a_stream() -> None:
    request = parse_request("chat", {"model": "m", "messages": USER,
                                     "max_completion_tokens": 5,
                                     "stream_options": {"include_usage": True}})
    assert request.max_tokens == 5 and not request.include_usage
    streamed = parse_request("chat", {"model": "m", "messages": USER, "stream": True,
                                      "stream_options": {"include_usage": True}})
    assert streamed.stream and streamed.include_usage


@pytest.mark.parametrize("doc, param", [
    ([], None),
    ({"messages": USER}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": ["hi"]}, "messages[0]"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ({"model": "m", "messages": USER, "temperature": 3}, "temperature"),
    ({"model": "m", "messages": USER, "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": USER, "top_p": -0.1}, "top_p"),
    ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": USER, "max_tokens": True}, "max_tokens"),
    ({"model": "m", "messages": USER, "n": 2}, "n"),
    ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    ({"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "messages": USER, "stop": [""]}, "stop"),
    ({"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": 1}},
     "stream_options.include_usage"),
])
def test_what_openai_refuses_is_a_400_naming_the_param(doc: object, param: str | None) -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request("chat", doc)
    assert refused.value.status == 400 and refused.value.param == param


def test_a_completion_without_a_prompt_is_refused() -> None:
    with pytest.raises(OpenAIError) as refused:
        parse_request("completion", {"model": "m", "prompt": 3})
    assert refused.value.param == "prompt"


def test_tokens_are_text_and_reaching_max_tokens_is_length() -> None:
    assert token_text("a") == "a" and token_text("é".encode()) == "é"
    with pytest.raises(OpenAIError) as refused:
        token_text(3)
    assert refused.value.status == 500 and "int" in str(refused.value)
    assert finish_reason(3, 3) == "length"
    assert finish_reason(2, 3) == finish_reason(9, None) == "stop"


def test_whole_answers_have_openai_shape() -> None:
    chat = completion(Answer("chat", "chatcmpl-1", 7, "m"), "hi", "stop", 5, 2)
    assert chat == {"id": "chatcmpl-1", "object": "chat.completion", "created": 7,
                    "model": "m", "choices": [{
                        "index": 0, "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    text = completion(Answer("completion", "cmpl-1", 7, "m"), "hi", "length", 1, 1)
    assert text["object"] == "text_completion"
    assert text["choices"] == [{"index": 0, "text": "hi", "finish_reason": "length",
                                "logprobs": None}]


def test_a_chat_stream_opens_with_the_role_and_ends_with_usage_when_asked() -> None:
    answer = Answer("chat", "c", 1, "m", include_usage=True)
    head = role_chunk(answer)
    assert head is not None and head["object"] == "chat.completion.chunk"
    assert head["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert head["usage"] is None  # every chunk says so when usage comes last
    assert text_chunk(answer, "x")["choices"][0]["delta"] == {"content": "x"}
    end = finish_chunk(answer, "stop")["choices"][0]
    assert end["delta"] == {} and end["finish_reason"] == "stop"
    last = usage_chunk(answer, 2, 3)
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 5
    assert "usage" not in text_chunk(Answer("chat", "c", 1, "m"), "x")


def test_a_completion_stream_has_text_chunks_and_no_role() -> None:
    answer = Answer("completion", "c", 1, "m")
    assert role_chunk(answer) is None
    assert text_chunk(answer, "x")["choices"][0]["text"] == "x"
    assert finish_chunk(answer, "length")["choices"][0] == {
        "index": 0, "text": "", "finish_reason": "length", "logprobs": None}


def test_events_are_json_after_data_and_done_ends_them() -> None:
    event = sse({"a": 1})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:]) == {"a": 1}
    assert DONE == b"data: [DONE]\n\n"


@pytest.mark.parametrize("status, kind", [(400, "invalid_request_error"),
                                          (401, "invalid_request_error"),
                                          (403, "permission_error"),
                                          (404, "invalid_request_error"),
                                          (429, "rate_limit_error"),
                                          (500, "server_error"), (503, "server_error")])
def test_errors_have_openai_shape(status: int, kind: str) -> None:
    assert error_body(status, "why", "p", "c") == {
        "error": {"message": "why", "type": kind, "param": "p", "code": "c"}}


def _service(name: str, *endpoints: tuple[str, str]) -> ServiceDescription:
    return ServiceDescription(name, {ep: EndpointDescription(
        name, ep, (Field("messages" if kind == "chat" else "prompt", "list"),), openai=kind)
        for ep, kind in endpoints})


SERVICES = {
    "chat": _service("chat", ("reply", "chat"), ("complete", "completion"), ("plain", "")),
    "twins": _service("twins", ("a", "chat"), ("b", "chat")),
    "none": _service("none", ("plain", "")),
}


def test_a_service_names_its_one_model_of_each_kind() -> None:
    assert model_names(SERVICES) == ["chat", "chat.reply", "chat.complete", "twins.a",
                                     "twins.b"]
    reply = resolve("chat", "chat", SERVICES)
    assert isinstance(reply, EndpointDescription) and reply.name == "reply"
    complete = resolve("chat", "completion", SERVICES)
    assert isinstance(complete, EndpointDescription) and complete.name == "complete"
    named = resolve("twins.b", "chat", SERVICES)
    assert isinstance(named, EndpointDescription) and named.name == "b"


@pytest.mark.parametrize("model, kind, why", [
    ("twins", "chat", "has 2 chat models"),
    ("none", "chat", "is not a chat model"),
    ("chat.plain", "chat", "is not a chat model"),
    ("chat.reply", "completion", "is not a completion model"),
    ("nope", "chat", "does not exist"),
    ("chat.nope", "chat", "does not exist"),
])
def test_what_no_endpoint_serves_says_why(model: str, kind: str, why: str) -> None:
    found = resolve(model, kind, SERVICES)
    assert isinstance(found, str) and why in found


def test_the_declaration_travels_in_the_endpoint_description() -> None:
    info = SERVICES["chat"].endpoints["reply"]
    assert EndpointDescription.from_map("chat", "reply", info.to_map()).openai == "chat"
    assert EndpointDescription.from_map("chat", "reply", {}).openai == ""


def test_a_bad_declaration_is_refused_where_it_is_made() -> None:
    import zeroserve
    from zeroserve.wire.envelope import ProtocolError

    with pytest.raises(ProtocolError, match="openai"):
        EndpointDescription.from_map("s", "e", {"openai": "robot"})
    with pytest.raises(ValueError, match="openai"):
        zeroserve.api(openai="robot")
    with pytest.raises(TypeError, match="must take an input named 'messages'"):
        @zeroserve.service(name="wrong")
        class Wrong:
            @zeroserve.api(openai="chat")
            def reply(self, prompt: str):
                yield prompt
