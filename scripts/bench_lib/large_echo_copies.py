"""Confirms the copy counts of docs/benchmarks.md ("A 16 MiB tensor echoed") for zeroserve's
own code on each path: whether each step's output shares memory with its input
(``np.shares_memory``), and the peak of new memory that tracemalloc sees while it runs, in
units of the tensor's size (a copy kept: 1; intermediates freed on the way are not summed).

    PYTHONPATH=. python scripts/bench_lib/large_echo_copies.py [--mib 16]

Library internals (tornado's read buffer, grpc's byte buffers, msgpack's Packer buffer,
libzmq) are counted by reading them; see the doc.
"""
from __future__ import annotations

import argparse
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from gateway.grpc_messages import response_serializer
from gateway.oip_grpc_body import build_response, build_unary_response
from gateway.oip_grpc_body import parse_request as parse_grpc
from gateway.oip_rest_body import encode_response
from gateway.oip_rest_body import parse_request as parse_http
from zeroserve.client import payloads
from zeroserve.grpc_gen import grpc_service_pb2 as pb
from zeroserve.wire import codec


def _step(label: str, nbytes: int, run: Callable[[], Any],
          shares: Callable[[Any], bool] | None = None) -> Any:
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    out = run()
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    view = "" if shares is None else f", view of its input: {shares(out)}"
    print(f"{label}: peak new memory {peak / nbytes:.2f} x the tensor{view}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=16)
    x = np.random.default_rng(0).random(parser.parse_args().mib << 18, dtype=np.float32)
    n = x.nbytes

    print("-- OIP HTTP (gateway)")
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [x.size],
                                     "parameters": {"binary_data_size": n}}],
                         "outputs": [{"name": "output",
                                      "parameters": {"binary_data": True}}]}).encode()
    body = header + x.tobytes()
    request = _step("parse_request", n, lambda: parse_http(body, len(header)),
                    lambda r: np.shares_memory(r.inputs["x"][1],
                                               np.frombuffer(body, np.uint8)))
    arr = request.inputs["x"][1]
    meta, frames = _step("codec.encode (to the broker)", n, lambda: codec.encode({"x": arr}),
                         lambda o: np.shares_memory(np.asarray(o[1][0]), arr))
    back = _step("codec.decode (the worker; the gateway for the answer)", n,
                 lambda: codec.decode(meta, frames)["x"],
                 lambda o: np.shares_memory(o, np.asarray(frames[0])))
    _step("encode_response", n, lambda: encode_response("m", "1", request,
                                                        [("output", back)]),
          lambda o: np.shares_memory(np.frombuffer(o[1][0], np.uint8), back))

    print("-- OIP gRPC (gateway)")
    message = pb.ModelInferRequest(model_name="m", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[x.size])],
        raw_input_contents=[x.tobytes()])
    parsed, typed = _step("parse_request (raw_input_contents[0] is a new bytes)", n,
                          lambda: parse_grpc(message))
    out = [("output", parsed.inputs["x"][1])]
    whole = _step("build_response (streams)", n,
                  lambda: build_response("m", "1", parsed, typed, out))
    _step("SerializeToString of it", n, whole.SerializeToString)
    apart = _step("build_unary_response (ModelInfer)", n,
                  lambda: build_unary_response("m", "1", parsed, typed, out),
                  lambda o: np.shares_memory(np.frombuffer(o.entries[0], np.uint8), out[0][1]))
    serialize = response_serializer(pb.ModelInferResponse)
    _step("its serializer", n, lambda: serialize(apart))

    print("-- SDK call (msgpack inline, client and gateway alike)")
    encoded = _step("codec.encode inline (payloads.encode_inputs)", n,
                    lambda: payloads.encode_inputs({"x": x}))
    _step("codec.decode inline", n, lambda: codec.decode(encoded)["x"],
          lambda o: np.shares_memory(o, np.frombuffer(encoded, np.uint8)))


if __name__ == "__main__":
    main()
