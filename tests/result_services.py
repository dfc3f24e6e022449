"""A service whose task returns a result of a size the test picks (job store fault tests)."""
import zeroserve


@zeroserve.service(name="results")
class Results:
    """``blob`` returns ``size`` bytes of text, ``echo_size`` takes a text of any size;
    ``ping`` is a real-time endpoint beside them."""

    @zeroserve.api
    def ping(self) -> str:
        return "pong"

    @zeroserve.task(timeout_s=60, max_attempts=1)
    def echo_size(self, text: str) -> int:
        return len(text)

    @zeroserve.task(timeout_s=60, max_attempts=1)
    def blob(self, size: int) -> str:
        return "x" * size
