from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

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
