"""The contract every zeroserve daemon shares: the ZeroMQ messages and the payload codec.

``envelope`` (protocol frame, commands, statuses, control frames), ``frontend``
(gateway <-> broker), ``backend`` (worker <-> broker), ``jobs`` (the job
channel), ``codec`` (payloads), ``dtypes`` and ``oip_tensors`` (tensors by
name and in the Open Inference Protocol's forms). ``docs/protocol.md`` has the
layout frame by frame. Daemons import this package, never the client SDK.
"""
