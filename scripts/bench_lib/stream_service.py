"""The service of ``scripts/bench streams``: one generator endpoint yielding small text chunks
(what a token-by-token text generator sends), with no model cost."""
import zeroserve


@zeroserve.service(name="tokens")
class Tokens:
    @zeroserve.api
    async def generate(self, n: int = 200):
        for i in range(n):
            yield f"token{i}"
