"""OpenAI's chat and completion requests in, its answers, stream chunks and errors out (pure).

A request body becomes an :class:`OpenAIRequest`: the model name, the messages (chat) or the
prompt (completion) as the endpoint's input, and every other field of the body as a
candidate input; the handler keeps those the endpoint declares (:meth:`OpenAIRequest.inputs`).
The fields OpenAI defines are checked as OpenAI checks them (a bad one is
:class:`OpenAIError` 400 naming the ``param``) and normalised: ``stop`` is always a list,
``max_completion_tokens`` is ``max_tokens``.

Token counts (``usage``): the gateway has no tokenizer, so each chunk an endpoint yields is
one completion token, and the prompt counts one token per character of its text (the
messages' contents, or the prompt). For a character-level model such as
``examples/chat.py`` both rules count characters.

Answers: :func:`completion` (``stream`` false), and for ``stream`` true the chunks of
:func:`role_chunk`, :func:`text_chunk`, :func:`finish_chunk` and :func:`usage_chunk`, each
framed by :func:`sse`, and :data:`DONE` last. Errors have OpenAI's shape
(:func:`error_body`), so that the ``openai`` client raises its usual exceptions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.json_body import dump_json

Kind = Literal["chat", "completion"]
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_MAX_STOP = 4
# fields that are not inputs of the endpoint: read by the gateway itself
_OWN_FIELDS = ("model", "messages", "prompt", "stream", "stream_options", "n")
DONE = b"data: [DONE]\n\n"


class OpenAIError(Exception):
    """A request OpenAI would refuse: its HTTP status, message, ``param`` and ``code``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


def _bad(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, param, "invalid_value")


@dataclass(frozen=True)
class OpenAIRequest:
    """One parsed request: ``model``, ``stream``, ``include_usage`` (``stream_options``),
    ``text_input`` (the messages or the prompt: the endpoint's first input), ``max_tokens``
    (None: no limit) and ``fields`` (every other field, normalised)."""

    kind: Kind
    model: str
    text_input: Any
    prompt_text: str
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def inputs(self, declared: set[str]) -> dict[str, Any]:
        """The endpoint's inputs: the messages (``messages``) or the prompt (``prompt``), and
        the fields whose names are in ``declared`` (the others are ignored)."""
        name = "messages" if self.kind == "chat" else "prompt"
        out = {k: v for k, v in self.fields.items() if k in declared}
        out[name] = self.text_input
        return out

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_text)


def parse_request(kind: Kind, doc: Any) -> OpenAIRequest:
    """The request of a ``/v1/chat/completions`` (``kind`` "chat") or ``/v1/completions``
    body (already parsed JSON); :class:`OpenAIError` 400 if OpenAI would refuse it."""
    if not isinstance(doc, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "'model' must be a non-empty string")
    text_input: Any
    if kind == "chat":
        text_input, prompt_text = _messages(doc.get("messages"))
    else:
        text_input = prompt_text = _prompt(doc.get("prompt"))
    stream = doc.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "'stream' must be a boolean")
    n = doc.get("n", 1)
    if n not in (1, None) or isinstance(n, bool):
        raise _bad("n", "only n=1 is supported: one choice per request")
    fields = {k: v for k, v in doc.items() if k not in _OWN_FIELDS and v is not None}
    if "max_completion_tokens" in fields:
        fields.setdefault("max_tokens", fields.pop("max_completion_tokens"))
    _check_fields(fields)
    return OpenAIRequest(kind, model, text_input, prompt_text, stream,
                         stream and _include_usage(doc.get("stream_options")),
                         fields.get("max_tokens"), fields)


def _messages(value: Any) -> tuple[list[dict[str, str]], str]:
    if not isinstance(value, list) or not value:
        raise _bad("messages", "'messages' must be a non-empty list")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _bad(where, f"'{where}' must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role", f"'{where}.role' must be one of {list(ROLES)}, "
                                        f"got {role!r}")
        messages.append({"role": role, "content": _content(message.get("content"), where)})
    return messages, "".join(m["content"] for m in messages)


def _content(value: Any, where: str) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                raise _bad(f"{where}.content", "only text content parts "
                           "({'type': 'text', 'text': ...}) are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"{where}.content", f"'{where}.content' must be a string or a list of parts")


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise _bad("prompt", "'prompt' must be a string (or a list of one string)")
    return value


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _bad("stream_options", "'stream_options' must be an object")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise _bad("stream_options.include_usage", "'include_usage' must be a boolean")
    return include


def _number(fields: dict[str, Any], name: str, low: float, high: float) -> None:
    value = fields.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and low <= value <= high):
        raise _bad(name, f"'{name}' must be a number from {low:g} to {high:g}, got {value!r}")
    fields[name] = float(value)


def _integer(fields: dict[str, Any], name: str, low: int) -> None:
    value = fields.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _bad(name, f"'{name}' must be an integer of at least {low}, got {value!r}")


def _check_fields(fields: dict[str, Any]) -> None:
    _integer(fields, "max_tokens", 1)
    _integer(fields, "seed", -(2**63))
    _number(fields, "temperature", 0.0, 2.0)
    _number(fields, "top_p", 0.0, 1.0)
    _number(fields, "presence_penalty", -2.0, 2.0)
    _number(fields, "frequency_penalty", -2.0, 2.0)
    stop = fields.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
                or len(stops) > _MAX_STOP:
            raise _bad("stop", f"'stop' must be a string or a list of at most {_MAX_STOP} "
                               "non-empty strings")
        fields["stop"] = stops


def token_text(value: Any) -> str:
    """The text of one chunk an endpoint yielded (str, or UTF-8 bytes); :class:`OpenAIError`
    500 for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise OpenAIError(500, f"the model yielded a {type(value).__name__}, not text",
                      code="model_error")


def finish_reason(tokens: int, max_tokens: int | None) -> str:
    """``"length"`` when the answer reached ``max_tokens`` tokens, else ``"stop"``."""
    return "length" if max_tokens is not None and tokens >= max_tokens else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass(frozen=True)
class Answer:
    """What every answer and chunk of one request share: its id, creation time (Unix
    seconds) and model name, and whether chunks carry ``usage`` (``include_usage``)."""

    kind: Kind
    id: str
    created: int
    model: str
    include_usage: bool = False

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        doc = self._head(obj)
        doc["choices"] = [{"index": 0, **choice, "logprobs": None}]
        if self.include_usage:
            doc["usage"] = None
        return doc


def completion(answer: Answer, text: str, reason: str, prompt_tokens: int,
               completion_tokens: int) -> dict[str, Any]:
    """The whole answer (``stream`` false)."""
    if answer.kind == "chat":
        doc = answer._head("chat.completion")
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": reason, "logprobs": None}
    else:
        doc = answer._head("text_completion")
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
    doc["choices"] = [choice]
    doc["usage"] = usage(prompt_tokens, completion_tokens)
    return doc


def role_chunk(answer: Answer) -> dict[str, Any] | None:
    """The chunk that opens a chat stream (the assistant's role); None for completions."""
    if answer.kind != "chat":
        return None
    return answer._chunk({"delta": {"role": "assistant", "content": ""},
                          "finish_reason": None})


def text_chunk(answer: Answer, text: str) -> dict[str, Any]:
    """One chunk of text."""
    if answer.kind == "chat":
        return answer._chunk({"delta": {"content": text}, "finish_reason": None})
    return answer._chunk({"text": text, "finish_reason": None})


def finish_chunk(answer: Answer, reason: str) -> dict[str, Any]:
    """The chunk that ends the choice, with its ``finish_reason``."""
    if answer.kind == "chat":
        return answer._chunk({"delta": {}, "finish_reason": reason})
    return answer._chunk({"text": "", "finish_reason": reason})


def usage_chunk(answer: Answer, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The last chunk when ``include_usage`` is asked: no choices, the usage."""
    obj = "chat.completion.chunk" if answer.kind == "chat" else "text_completion"
    doc = answer._head(obj)
    doc["choices"] = []
    doc["usage"] = usage(prompt_tokens, completion_tokens)
    return doc


def sse(doc: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``doc`` as JSON."""
    return b"data: " + dump_json(doc) + b"\n\n"


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                403: "permission_error", 404: "invalid_request_error",
                409: "invalid_request_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for an answer with HTTP ``status``."""
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_list(names: list[str], created: int = 0) -> dict[str, Any]:
    """The ``GET /v1/models`` answer."""
    return {"object": "list", "data": [model_entry(n, created) for n in names]}


def model_entry(name: str, created: int = 0) -> dict[str, Any]:
    """One model of ``GET /v1/models`` (and ``GET /v1/models/{name}``)."""
    return {"id": name, "object": "model", "created": created, "owned_by": "zeroserve"}
