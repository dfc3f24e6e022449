"""A three-stage text pipeline: tokenize -> embed (batchable) -> rank, each stage its own
service with its own workers, the last one calling the others through the broker.

    zeroserve serve examples/pipeline.py:Tokenizer examples/pipeline.py:Embedder \
        examples/pipeline.py:Ranker            # or: zeroserve serve examples/pipeline.yaml
    curl -s localhost:8000/ranker/rank -H 'content-type: application/json' \
         -d '{"query": "fast cars", "docs": ["a red car", "slow boats", "fast cars win"]}'

The embedder batches the calls of every ranker worker together (``docs/composition.md``).
"""
import hashlib

import numpy as np

import zeroserve

DIM = 32


@zeroserve.service(name="tokenizer")
class Tokenizer:
    @zeroserve.api
    def tokens(self, texts: list) -> list:
        """Lower-case words of each text."""
        return [[w.strip(".,;:!?").lower() for w in str(t).split() if w.strip(".,;:!?")]
                for t in texts]


def _word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


@zeroserve.service(name="embedder")
class Embedder:
    @zeroserve.api(batchable=True, max_batch_size=256, max_latency_ms=2)
    def embed(self, ids: np.ndarray) -> np.ndarray:
        """Unit vectors of rows of hashed word ids (int64 [n, 8], -1 for none), one per row."""
        out = np.zeros((len(ids), DIM), dtype=np.float32)
        for row, word_ids in enumerate(ids):
            for word_id in word_ids[word_ids >= 0]:
                out[row] += _word_vector(str(int(word_id)))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def _ids(words: list, width: int = 8) -> list:
    ids = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "big") for w in words]
    return (ids + [-1] * width)[:width]


@zeroserve.service(name="ranker")
class Ranker:
    tokenizer = zeroserve.depends(Tokenizer)
    embedder = zeroserve.depends(Embedder)

    @zeroserve.api
    async def rank(self, query: str, docs: list) -> list:
        """``docs`` ordered by cosine similarity to ``query``, with their scores."""
        words = await self.tokenizer.call("tokens", texts=[query, *docs])
        ids = np.array([_ids(w) for w in words], dtype=np.int64)
        vectors = await self.embedder.call("embed", ids=ids)
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")
        return [{"doc": docs[i], "score": round(float(scores[i]), 4)} for i in order]
