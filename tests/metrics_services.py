"""A service that publishes metrics of its own (``zeroserve.metrics``), for the tests."""
import os

import zeroserve
from zeroserve.metrics import Counter, Gauge, Histogram

CALLS = Counter("greeter_calls", "Calls of greet, by language", ["language"])  # module level


@zeroserve.service(name="greeter")
class Greeter:
    """Counts its calls by language, the length of what it answered, and its pid."""

    def __init__(self) -> None:
        self.pid = Gauge("greeter_pid", "The worker's process id")  # in __init__
        self.pid.set(os.getpid())

    @zeroserve.api
    def greet(self, name: str, language: str = "en") -> dict:
        CALLS.labels(language=language).inc()
        lengths = Histogram("greeter_answer_chars", "Characters per answer",
                            buckets=(8, 16, 64))  # in an endpoint: the same metric each time
        answer = f"{'hello' if language == 'en' else 'hallo'} {name}"
        lengths.observe(len(answer))
        return {"answer": answer, "pid": os.getpid()}
