from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallRequest(_message.Message):
    __slots__ = ("service", "endpoint", "inputs")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    inputs: bytes
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., inputs: _Optional[bytes] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class ServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServicesReply(_message.Message):
    __slots__ = ("services", "broker_alive")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    BROKER_ALIVE_FIELD_NUMBER: _ClassVar[int]
    services: bytes
    broker_alive: bool
    def __init__(self, services: _Optional[bytes] = ..., broker_alive: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "service", "endpoint", "state", "attempts", "max_attempts", "progress", "error", "created_at", "updated_at", "started_at", "finished_at", "expires_at", "cancel_requested", "idempotency_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    service: str
    endpoint: str
    state: str
    attempts: int
    max_attempts: int
    progress: float
    error: str
    created_at: float
    updated_at: float
    started_at: float
    finished_at: float
    expires_at: float
    cancel_requested: bool
    idempotency_key: str
    def __init__(self, id: _Optional[str] = ..., service: _Optional[str] = ..., endpoint: _Optional[str] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., max_attempts: _Optional[int] = ..., progress: _Optional[float] = ..., error: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., cancel_requested: _Optional[bool] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("service", "endpoint", "inputs", "idempotency_key")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    inputs: bytes
    idempotency_key: str
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., inputs: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SubmitJobReply(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: Job
    created: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    def __init__(self, value: _Optional[bytes] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("service", "state", "limit", "cursor")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    service: str
    state: str
    limit: int
    cursor: int
    def __init__(self, service: _Optional[str] = ..., state: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[int] = ...) -> None: ...

class ListJobsReply(_message.Message):
    __slots__ = ("jobs", "next_cursor")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_cursor: int
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_cursor: _Optional[int] = ...) -> None: ...
