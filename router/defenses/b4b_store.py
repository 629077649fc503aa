"""B4B's state in the store (router setting ``state_store``): each key's set of hit buckets and the running sum of
every embedding served, shared by every worker of every router. The defense is router/defenses/b4b.py.

One script per request adds the batch's buckets and sums and answers the key's coverage and the new sums. The
batch is centred on the mean this worker last read plus the batch itself (exactly the in-process mean while one
worker serves; with several, it lags by what the others served since, a drift that fades as the count grows).
"""

from __future__ import annotations

import numpy as np

from ..state_store import StateStore, key
from .b4b import B4B

OBSERVE = """
-- KEYS: 1 the key's buckets (set), 2 the running sum of every embedding served (hash: 'count', '0'..'E-1')
-- ARGV: 1 rows in the batch, 2 E, then the batch's E column sums, then its bucket ids
local dims = tonumber(ARGV[2])
redis.call('SADD', KEYS[1], unpack(ARGV, 3 + dims))
local out = {redis.call('SCARD', KEYS[1]), redis.call('HINCRBY', KEYS[2], 'count', ARGV[1])}
for i = 0, dims - 1 do out[#out + 1] = redis.call('HINCRBYFLOAT', KEYS[2], i, ARGV[3 + i]) end
return out
"""


class StoreB4B:
    def __init__(self, b4b: B4B, store: StateStore, prefix: str):
        self.b4b, self.store, self.prefix = b4b, store, prefix
        self._observe = store.script(OBSERVE)
        self._sum: np.ndarray | None = None  # the store's running sum and count, as last read
        self._count = 0

    async def perturb_client_output(self, client: str, emb: np.ndarray) -> tuple[np.ndarray, dict]:
        d = self.b4b
        if d._planes is None:
            d._planes = np.random.default_rng(d.seed + 1).standard_normal((emb.shape[1], d.hash_bits))
        if self._sum is None:
            self._sum = np.zeros(emb.shape[1])
        batch_sum = emb.sum(0, dtype=np.float64)
        mean = (self._sum + batch_sum) / (self._count + len(emb))
        ids = ((emb - mean) @ d._planes > 0).astype(np.int64) @ (1 << np.arange(d.hash_bits))
        reply = await self.store.run(self._observe, [key(self.prefix, client, "b4b"), f"{self.prefix}:b4b:sum"],
                                     [len(emb), emb.shape[1], *batch_sum.tolist(), *ids.tolist()])
        hit, self._count = int(reply[0]), int(reply[1])
        self._sum = np.array([float(v) for v in reply[2:]])
        c = hit / 2 ** d.hash_bits
        s = d.sigma(c)
        rms = np.linalg.norm(emb, axis=1, keepdims=True) / np.sqrt(emb.shape[1])
        noisy = emb + s * rms * d._rng.standard_normal(emb.shape)
        return noisy.astype(emb.dtype), {"b4b_coverage": round(c, 6), "b4b_sigma": round(s, 6)}
