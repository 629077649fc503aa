"""Systems under test: one tiny interface, ``infer(x, min_accuracy, max_latency_ms) -> probabilities``.

The router, Triton called directly and a null system all satisfy it, so benchmarks and attacks are written
once, and the harness's own overhead can be measured against the null system. The router and the null system
have asyncio twins (``AsyncRouterClient``, ``AsyncNullSystem``: ``await infer``) for the asyncio driver.
"""

from __future__ import annotations

import http.client
import json
from typing import Protocol

import numpy as np

from common.errors import PsmlError


class SystemUnderTest(Protocol):
    def infer(self, x: np.ndarray, min_accuracy: float | None = None, max_latency_ms: float | None = None) -> np.ndarray: ...

    def close(self) -> None: ...


class RouterRejected(PsmlError):
    """The router answered a 4xx/5xx; ``status`` and ``body`` say why."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"router answered {status}: {body.get('detail', body)}")
        self.status, self.body = status, body


def json_body(x, min_accuracy=None, max_latency_ms=None) -> dict:
    """An inference request's JSON body: the inputs and the requirements stated."""
    body = {"inputs": np.asarray(x, dtype=np.float32).tolist()}
    if min_accuracy is not None:
        body["min_accuracy"] = float(min_accuracy)
    if max_latency_ms is not None:
        body["max_latency_ms"] = float(max_latency_ms)
    return body


class RouterClient:
    """The router's public API over one keep-alive HTTP/1.1 connection (one per thread)."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0, pin_model: str | None = None,
                 binary: bool = False, endpoint: str = "/v1/infer"):
        host_port = url.split("://", 1)[-1].rstrip("/")
        self.host, port = host_port.rsplit(":", 1)
        self.port, self.api_key, self.timeout_s = int(port), api_key, timeout_s
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        self.headers = {"x-api-key": api_key, "content-type": "application/json"}
        if pin_model is not None:  # accepted by profiling routers only (allow_pinned_model)
            self.headers["x-psml-model"] = pin_model
        self.binary = binary  # send the tensor as application/octet-stream (shape and requirements in headers)
        # /v1/infer answers probabilities; /v1/embed (encoder zoos) embeddings: infer() returns either
        self.use_endpoint(endpoint)

    def use_endpoint(self, endpoint: str) -> None:
        """Where infer() posts: the zoo's endpoint (``/v1/zoo``'s ``endpoint``) once it is known."""
        self.endpoint = endpoint
        self._key = "embeddings" if endpoint == "/v1/embed" else "probabilities"

    def request(self, method: str, path: str, body: dict | bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict]:
        payload = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = headers or self.headers
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            r = self.conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        except (http.client.HTTPException, OSError):
            self.conn.close()  # reconnect once on a dropped keep-alive connection
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self.conn.request(method, path, body=payload, headers=headers)
            r = self.conn.getresponse()
            return r.status, json.loads(r.read() or b"null")

    def infer(self, x, min_accuracy=None, max_latency_ms=None) -> np.ndarray:
        return np.asarray(self.answer(x, min_accuracy, max_latency_ms)[self._key], dtype=np.float32)

    def answer(self, x, min_accuracy=None, max_latency_ms=None) -> dict:
        """The whole 200 answer (request_id, probabilities and labels, or embeddings); RouterRejected otherwise."""
        if self.binary:
            return self._answer_binary(np.asarray(x, dtype="<f4"), min_accuracy, max_latency_ms)
        status, answer = self.request("POST", self.endpoint, json_body(x, min_accuracy, max_latency_ms))
        if status != 200:
            raise RouterRejected(status, answer or {})
        return answer

    def _answer_binary(self, x: np.ndarray, min_accuracy, max_latency_ms) -> dict:
        headers = self.headers | {"content-type": "application/octet-stream", "x-psml-shape": ",".join(map(str, x.shape))}
        if min_accuracy is not None:
            headers["x-psml-min-accuracy"] = repr(float(min_accuracy))
        if max_latency_ms is not None:
            headers["x-psml-max-latency-ms"] = repr(float(max_latency_ms))
        status, answer = self.request("POST", self.endpoint, np.ascontiguousarray(x).tobytes(), headers)
        if status != 200:
            raise RouterRejected(status, answer or {})
        return answer

    def zoo(self) -> dict:
        return self.request("GET", "/v1/zoo")[1]

    def close(self) -> None:
        self.conn.close()


class DirectTriton:
    """One zoo model called straight through tritonclient HTTP (binary tensors); requirements are ignored.
    ``sample_shape``: the model's own (an imported image model's [1, 8, 8]); flat samples are reshaped to it."""

    def __init__(self, http_url: str, model: str, timeout_s: float = 60.0, input_name: str = "INPUT",
                 output_name: str = "PROBS", sample_shape: tuple[int, ...] | None = None):
        import tritonclient.http as httpclient

        self._mod, self.model = httpclient, model
        self.input_name, self.output_name, self.sample_shape = input_name, output_name, sample_shape
        self.client = httpclient.InferenceServerClient(http_url, connection_timeout=timeout_s, network_timeout=timeout_s)
        self.outputs = [httpclient.InferRequestedOutput(output_name, binary_data=True)]

    @classmethod
    def for_entry(cls, http_url: str, entry, timeout_s: float = 60.0) -> "DirectTriton":
        """The client for a manifest's model entry: its tensor names and sample shape."""
        return cls(http_url, entry.name, timeout_s, entry.input.name, entry.output.name, entry.sample_shape)

    def infer(self, x, min_accuracy=None, max_latency_ms=None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.sample_shape is not None and x.shape[1:] != tuple(self.sample_shape):
            x = x.reshape(len(x), *self.sample_shape)
        inp = self._mod.InferInput(self.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        return self.client.infer(self.model, [inp], outputs=self.outputs).as_numpy(self.output_name)

    def close(self) -> None:
        self.client.close()


class NullSystem:
    """Answers uniform probabilities at once: what the harness costs by itself."""

    def __init__(self, n_classes: int = 10):
        self.n_classes = n_classes

    def infer(self, x, min_accuracy=None, max_latency_ms=None) -> np.ndarray:
        return np.full((len(x), self.n_classes), 1.0 / self.n_classes, dtype=np.float32)

    def close(self) -> None:
        return None


class AsyncRouterClient:
    """The router's public API for the asyncio driver (stack/closed_loop.py): one aiohttp session on one
    keep-alive connection, JSON bodies; create it inside the running loop."""

    def __init__(self, url: str, api_key: str, timeout_s: float = 30.0, endpoint: str = "/v1/infer"):
        import aiohttp

        self.url = url.rstrip("/") + endpoint
        self._key = "embeddings" if endpoint == "/v1/embed" else "probabilities"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                             timeout=aiohttp.ClientTimeout(total=timeout_s),
                                             headers={"x-api-key": api_key, "content-type": "application/json"})

    async def infer(self, x, min_accuracy=None, max_latency_ms=None) -> np.ndarray:
        payload = json.dumps(json_body(x, min_accuracy, max_latency_ms)).encode()
        async with self.session.post(self.url, data=payload) as r:
            answer = json.loads(await r.read() or b"null")
            if r.status != 200:
                raise RouterRejected(r.status, answer or {})
        return np.asarray(answer[self._key], dtype=np.float32)

    async def close(self) -> None:
        await self.session.close()


class AsyncNullSystem:
    """NullSystem for the asyncio driver: answers at once, without yielding to the loop."""

    def __init__(self, n_classes: int = 10):
        self.system = NullSystem(n_classes)

    async def infer(self, x, min_accuracy=None, max_latency_ms=None) -> np.ndarray:
        return self.system.infer(x)

    async def close(self) -> None:
        return None
