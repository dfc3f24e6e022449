"""``ModelStreamInfer``: Triton's decoupled-model contract on one bidirectional gRPC stream.

Every request of the stream runs at once (several may be in flight) and is answered by
``ModelStreamInferResponse`` messages carrying its ``id``:

- a model that does not stream: one response, with the response parameter
  ``triton_final_response`` true;
- a streaming endpoint (a decoupled model): one response per chunk, its outputs as a
  non-streaming answer's (:func:`gateway.oip_models.endpoint_outputs`), each with
  ``triton_final_response`` false, except the last when its end is known as it goes out
  (the end arrived with it). A request with the parameter
  ``triton_enable_empty_final_response`` true gets every chunk with the flag false and then an
  empty response (no outputs) with it true, so that its client always sees the end;
- a failure (a message that does not parse, an unknown model, bad inputs, an error before or
  after some chunks): one response with ``error_message`` set (tritonclient raises it as that
  request's error), ``triton_final_response`` true, and the stream carries on.

Flow control: at most :data:`WINDOW` chunk responses of a stream wait for its client; past that
the requests stop reading their chunks (so their workers' windows fill and their generators
wait), and a client that reads none for the idle limit loses the request
(:func:`gateway.streams.written`). Closing the call cancels every stream it runs.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from gateway.errors import RequestFailed, failure_of
from gateway.grpc_messages import MalformedRequest
from gateway.oip_grpc_body import parameter
from gateway.oip_models import endpoint_inputs, endpoint_outputs
from gateway.oip_rest_body import read_shm_inputs, select_outputs
from gateway.streams import StreamLimits, decode_chunk, open_stream, stream_limits, written
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire.envelope import Status
from zeroserve.wire.oip_tensors import TensorError

if TYPE_CHECKING:
    from gateway.oip_grpc import InferenceService

FINAL = "triton_final_response"
EMPTY_FINAL = "triton_enable_empty_final_response"
WINDOW = 16  # chunk responses of one stream waiting for its client, across its requests

_Answer = tuple[pb.ModelStreamInferResponse, bool]  # and whether it holds a window slot


async def stream_infer(service: InferenceService,
                       requests: AsyncIterator[pb.ModelInferRequest | MalformedRequest],
                       context: grpc.aio.ServicerContext
                       ) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """The responses of one ``ModelStreamInfer`` call, as they are ready."""
    answers: asyncio.Queue[_Answer | None] = asyncio.Queue()
    window = asyncio.Semaphore(WINDOW)
    running: set[asyncio.Task] = set()

    async def send_chunk(response: pb.ModelStreamInferResponse, limits: StreamLimits) -> None:
        await written(window.acquire(), limits)
        answers.put_nowait((response, True))

    async def answer(request: pb.ModelInferRequest | MalformedRequest) -> None:
        try:
            if isinstance(request, MalformedRequest):
                raise request.refuse(f"gRPC ModelStreamInfer from {context.peer()}")
            await _answer(service, request, context, send_chunk, answers.put_nowait)
        except Exception as exc:  # never leave a request of the stream unanswered
            request_id = "" if isinstance(request, MalformedRequest) else request.id
            failure = failure_of(exc, f"gRPC ModelStreamInfer request {request_id!r}")
            answers.put_nowait((_error(request, str(failure)), False))

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.create_task(answer(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            answers.put_nowait(None)

    reader = asyncio.create_task(read())
    try:
        while (item := await answers.get()) is not None:
            response, holds_slot = item
            yield response
            if holds_slot:
                window.release()
        await reader
    finally:
        reader.cancel()
        for task in list(running):
            task.cancel()


async def _answer(service: InferenceService, request: pb.ModelInferRequest,
                  context: grpc.aio.ServicerContext, send_chunk: Any, send: Any) -> None:
    """Answer one request: ``send_chunk(response, limits)`` (awaited) for each chunk,
    ``send(answer)`` for the rest."""
    ref, info = await service._model(request.model_name, request.model_version, context,
                                     by_traffic=True)
    if not info.streams:
        response = await service._infer(request, context, None)
        response.parameters[FINAL].bool_param = True
        send((pb.ModelStreamInferResponse(infer_response=response), False))
        return
    body = service.body(request, context, ref.version)
    parsed = body.parse()
    read_shm_inputs(parsed, body.regions)  # a stream's inputs are copied (gateway.shm_direct)
    inputs = endpoint_inputs(info, parsed.inputs, ref.name)
    metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ())
                if isinstance(v, str)}
    limits = stream_limits(body.deadline_s(parsed.timeout_us), service.stream, metadata.get)
    empty_final = EMPTY_FINAL in request.parameters and parameter(
        request.parameters[EMPTY_FINAL]) is True

    def chunk_response(chunk: Any, final: bool) -> pb.ModelStreamInferResponse:
        try:
            produced = endpoint_outputs(info, decode_chunk(chunk))
        except TensorError as exc:
            raise RequestFailed(Status.USER_ERROR, str(exc)) from None
        out = body.encode(ref.name, parsed, select_outputs(produced, parsed.outputs, ref.name))
        out.parameters[FINAL].bool_param = final
        return pb.ModelStreamInferResponse(infer_response=out)

    chunks = await open_stream(service.link, info, inputs, limits)
    async with contextlib.aclosing(chunks), contextlib.aclosing(
            with_last(chunks, look_ahead=not empty_final)) as marked:
        async for chunk, last in marked:
            await send_chunk(chunk_response(chunk, last), limits)
        if empty_final:
            final = pb.ModelInferResponse(model_name=ref.name, model_version=str(ref.version),
                                          id=request.id)
            final.parameters[FINAL].bool_param = True
            send((pb.ModelStreamInferResponse(infer_response=final), False))


T = TypeVar("T")


async def with_last(items: AsyncIterator[T], look_ahead: bool = True
                    ) -> AsyncGenerator[tuple[T, bool], None]:
    """Each item of ``items`` with whether it is known to be the last: with ``look_ahead``,
    the end counts as known when it is ready as the item goes out (one step of the loop,
    never a wait: an item is never held back for the next); else never. Closing this closes
    nothing of ``items`` (its owner closes it)."""
    item = await anext(items, _END)
    while item is not _END:
        following = asyncio.ensure_future(anext(items, _END))
        try:
            if look_ahead:
                await asyncio.sleep(0)  # one step: the end, if it came with this item, is read
            last = look_ahead and following.done() and not following.cancelled() and \
                following.exception() is None and following.result() is _END
            yield cast(T, item), last
            item = await following
        finally:
            if not following.done():
                following.cancel()
                await asyncio.wait([following])  # before its owner closes ``items``
            elif not following.cancelled():
                following.exception()  # seen: the owner's close is what answers it


_END: Any = object()


def _error(request: pb.ModelInferRequest | MalformedRequest, message: str
           ) -> pb.ModelStreamInferResponse:
    """The response that ends a failed request (final: nothing follows it)."""
    response = pb.ModelInferResponse() if isinstance(request, MalformedRequest) else \
        pb.ModelInferResponse(model_name=request.model_name, id=request.id)
    response.parameters[FINAL].bool_param = True
    return pb.ModelStreamInferResponse(error_message=message, infer_response=response)
