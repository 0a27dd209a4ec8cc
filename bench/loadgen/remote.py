"""The Server scenario against a live Triton: ``edge bench RUN --scenario server --url URL``.

Any Triton (``edge serve RUN``, or a server of your own) over HTTP or gRPC through
``tritonclient``. The model's input (name, datatype, dims, batch axis) and output are read back
from its config, and so is the preprocessing spec where the config carries it (``edge serve`` and
``edge triton`` write ``edge_preprocess_spec``), else the run's. The samples are the run's pinned
test split, preprocessed on this side into memory (the ``library``); each LoadGen query becomes one
request as it arrives, so the server's dynamic batching, as configured, is what batches them.
LoadGen's find-peak mode reports the highest Poisson rate whose p99 holds ``--latency-bound``, searching
from a quarter of the rate of one request at a time (``--server-qps`` to choose).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from bench.loadgen import NOT_AUDITED
from bench.loadgen.job import modes, scenario_dir
from bench.loadgen.library import SampleLibrary
from bench.loadgen.runner import run_scenario
from bench.loadgen.scenarios import ScenarioOptions, loadgen
from bench.loadgen.suts import LatencyLog, answer
from edge.errors import UserError, require
from edge.spec import PreprocessSpec

# find-peak starts from this share of the rate of one request at a time: LoadGen refuses to search
# from a rate that already misses the bound (measured: half of it missed 50 ms without dynamic batching)
START_SHARE = 0.25
HTTP_THREADS = 16  # requests in flight at once over HTTP (one client per thread)
_DTYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16)}


@dataclass(frozen=True)
class Endpoint:
    """Where the model is and what it takes, as its config says."""

    protocol: str  # "http" or "grpc"
    address: str  # host:port
    model: str
    input_name: str
    datatype: str
    dims: tuple[int, ...]
    max_batch_size: int
    output_name: str
    spec: PreprocessSpec | None

    def describe(self) -> dict[str, Any]:
        return {
            "url": f"{self.protocol}://{self.address}",
            "model": self.model,
            "input": {"name": self.input_name, "datatype": self.datatype, "dims": list(self.dims)},
            "max_batch_size": self.max_batch_size,
            "output": self.output_name,
        }


def parse_url(url: str) -> tuple[str, str]:
    """'http://127.0.0.1:8000' -> ('http', '127.0.0.1:8000'); a bare HOST:PORT is HTTP."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "grpc") or not parsed.hostname or not parsed.port:
        raise UserError(f"--url {url!r}: give http://HOST:PORT or grpc://HOST:PORT")
    return parsed.scheme, parsed.netloc


def _client(protocol: str, address: str) -> Any:
    module = require(f"tritonclient.{protocol}", "triton", "the Server scenario against a Triton endpoint")
    return module.InferenceServerClient(address)


def read_endpoint(url: str, model: str | None) -> Endpoint:
    """The endpoint's model and its input/output spec, read from the server (one line when it cannot be)."""
    protocol, address = parse_url(url)
    client = _client(protocol, address)
    try:
        if model is None:
            index = client.get_model_repository_index(**({"as_json": True} if protocol == "grpc" else {}))
            names = [m["name"] for m in (index.get("models", []) if isinstance(index, dict) else index)]
            if len(names) != 1:
                raise UserError(f"{url} serves {len(names)} models ({', '.join(names) or 'none'}): name one with --model")
            model = names[0]
        config = client.get_model_config(model, **({"as_json": True} if protocol == "grpc" else {}))
    except UserError:
        raise
    except Exception as exc:  # connection refused, unknown model: the server's own words
        raise UserError(f"cannot read the model config from {url}: {str(exc).splitlines()[0][:200]}") from exc
    config = config.get("config", config)
    first, out = config["input"][0], config["output"][0]
    datatype = first.get("data_type", "TYPE_FP32")
    if datatype not in _DTYPES:
        raise UserError(f"{model}'s input is {datatype}: the Server scenario sends preprocessed FP32 or FP16 images")
    spec_text = (config.get("parameters") or {}).get("edge_preprocess_spec", {}).get("string_value")
    return Endpoint(
        protocol,
        address,
        model,
        first["name"],
        datatype,
        tuple(int(d) for d in first["dims"]),
        int(config.get("max_batch_size", 0)),
        out["name"],
        PreprocessSpec.from_dict(json.loads(spec_text)) if spec_text else None,
    )


class RemoteSUT:
    """LoadGen's queries as Triton requests, one a sample, as they arrive (gRPC: asynchronous with
    a callback; HTTP: a pool of threads, one client each)."""

    max_batch = None  # the server batches

    def __init__(self, lg: Any, library: SampleLibrary, endpoint: Endpoint):
        self.lg, self.library, self.endpoint = lg, library, endpoint
        self.module = require(f"tritonclient.{endpoint.protocol}", "triton", "the Server scenario against a Triton endpoint")
        self.log = LatencyLog()
        self.error: BaseException | None = None
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._grpc: Any = None

    def __enter__(self) -> RemoteSUT:
        if self.endpoint.protocol == "grpc":
            self._grpc = self.module.InferenceServerClient(self.endpoint.address)
        else:
            self._pool = ThreadPoolExecutor(HTTP_THREADS, thread_name_prefix="edge-loadgen-http")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._grpc is not None:
            self._grpc.close()

    def inputs(self, sample: Any) -> list[Any]:
        data = self.library.batch([sample.index]).astype(_DTYPES[self.endpoint.datatype][1], copy=False)
        if self.endpoint.max_batch_size == 0:
            data = data[0]
        request = self.module.InferInput(self.endpoint.input_name, list(data.shape), _DTYPES[self.endpoint.datatype][0])
        request.set_data_from_numpy(data)
        return [request]

    def _done(self, sample: Any, arrived: int, logits: np.ndarray | None, error: Any) -> None:
        if error is not None and self.error is None:
            self.error = UserError(f"the server answered with an error: {str(error).splitlines()[0][:200]}")
        answer(self.lg, [sample], np.zeros((1, 1), np.float32) if logits is None else logits.reshape(1, -1))
        self.log.add(1, time.monotonic_ns() - arrived)

    def issue(self, samples: list[Any]) -> None:
        arrived = time.monotonic_ns()
        for sample in samples:
            if self._grpc is not None:
                self._grpc.async_infer(
                    self.endpoint.model,
                    self.inputs(sample),
                    lambda result, error, sample=sample: self._done(
                        sample, arrived, None if error else result.as_numpy(self.endpoint.output_name), error
                    ),
                )
            else:
                assert self._pool is not None
                self._pool.submit(self._http_one, sample, arrived)

    def _http_one(self, sample: Any, arrived: int) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.module.InferenceServerClient(self.endpoint.address)
        try:
            logits, error = client.infer(self.endpoint.model, self.inputs(sample)).as_numpy(self.endpoint.output_name), None
        except Exception as exc:  # answered with zeros so LoadGen finishes; the run then fails with it
            logits, error = None, exc
        self._done(sample, arrived, logits, error)

    def flush(self) -> None:
        """Nothing is held back on this side."""


def probe_latency_ms(sut: RemoteSUT, library: SampleLibrary, count: int = 20) -> float:
    """The median of ``count`` one-at-a-time requests: where find-peak starts its search."""
    library.load([0])
    client = sut.module.InferenceServerClient(sut.endpoint.address)
    try:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.infer(sut.endpoint.model, sut.inputs(_Sample(0)))
            times.append((time.perf_counter() - started) * 1000.0)
    finally:
        client.close()
        library.unload([0])
    return statistics.median(times)


@dataclass
class _Sample:
    index: int
    id: int = 0


def run_remote(
    url: str, model: str | None, plan: Any, options: ScenarioOptions, mode: str, budget_mib: float, logs: Path
) -> dict[str, Any]:
    """The report's ``loadgen`` section for the endpoint at ``url`` (Server scenario, find-peak)."""
    from bench.worker import load_eval_images
    from edge.artifact_spec import artifact_spec

    lg = loadgen()
    endpoint = read_endpoint(url, model)
    spec = endpoint.spec or artifact_spec(next(iter(plan.artifacts.values())))
    images, labels, _, _ = load_eval_images(_eval_job(plan))
    library = SampleLibrary(spec, images, labels, budget_mib)
    entries = []
    if not options.server_qps:  # find-peak starts from a rate the endpoint holds; accuracy runs at it
        options = replace(
            options, server_qps=max(1.0, START_SHARE * 1000.0 / probe_latency_ms(RemoteSUT(lg, library, endpoint), library))
        )
    for accuracy in modes(mode):
        sut = RemoteSUT(lg, library, endpoint)
        filled = options
        out = scenario_dir(logs, f"served-{endpoint.model}", "cpu", "server", accuracy)
        entry = run_scenario(sut, library, "server", accuracy, filled, out)
        entries.append({"artifact": f"served:{endpoint.model}", "device": "endpoint", "endpoint": endpoint.describe(), **entry})
    return {"note": NOT_AUDITED, "scenarios": ["server"], "mode": mode, "budget_mib": budget_mib, "entries": entries}


def _eval_job(plan: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(plan.eval)
