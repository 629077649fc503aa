"""``psml zoo import``: a zoo from a user's own ONNX classifiers and labelled evaluation data, of any input shape.

The same steps and the same atomicity as ``psml zoo build``, with training replaced by checks (zoo/onnx_import.py):
check every file and the data, prepare the served copies (softmax, dynamic batch axis), measure accuracy with
onnxruntime on the evaluation split, render both repository variants, start Triton, check that the served
answers equal the file's own (``parity``), profile exactly as built zoos are profiled, compute the front and
write the manifest. Everything goes to a hidden ``.<name>.partial-*`` folder first and is renamed into place only
when all of it succeeded: a failed import leaves nothing that looks like a zoo.

Data: an .npz file with ``x`` (samples of the models' shape, or flattened) and ``y`` (labels), or a folder in
torchvision's MNIST / CIFAR-10 layout (official test split to evaluate, training split as the attacker's pool;
pixels scaled to [0, 1], no normalisation). The evaluation set is split by a seeded permutation into ``test``
(accuracy, profiling inputs, surrogate scoring) and ``attacker_pool`` (``pool_fraction`` of it), unless the
attacker's pool comes from its own file; ``victim_train`` is empty: psml never sees how the models were trained.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.atomic import staged_folder
from common.errors import ModelLoadError, TritonError

from .build import DATA_FILE, _direct_only, compose_manifest, sha256
from .data import SPLITS, Dataset
from .manifest import MANIFEST_NAME, save_manifest
from .onnx_import import (ImportFailure, answers_probabilities, check_name, check_prepared, check_zoo,
                          inspect_onnx, load_eval_data, load_folder, load_pool, prepare_onnx)
from .profile import ProfileSettings
from .profiling import profile_zoo
from .repository import ModelIO, RepositorySettings, render

PARITY_TOLERANCE = 1e-4  # served vs file, max |dp|: the Python backend runs the same onnxruntime on the same file
PARITY_SAMPLES = 1024

# A short profile (as the test zoo's): for trying an import out and for tests; figures from it are rough.
QUICK_PROFILE = ProfileSettings(batch_sizes=(1, 8), concurrency=(1, 4), selection_rounds=3,
                                selection_requests_per_round=100, cell_duration_s=0.1, cell_min_requests=10,
                                warmup_requests=4, bootstrap_resamples=300)


@dataclass(frozen=True)
class ImportSpec:
    name: str
    onnx_files: tuple[Path, ...]
    data: Path  # .npz with x, y; or a torchvision-layout folder
    attacker_pool: Path | None = None  # .npz with x; default: pool_fraction of the evaluation set
    softmax: tuple[str, ...] | None = None  # None: no model; (): every model; else the models so named
    pool_fraction: float = 0.5
    seed: int = 0  # the evaluation split and the profile's sample stream
    profiling: ProfileSettings = field(default_factory=ProfileSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)

    def __post_init__(self):
        if not 0 < self.pool_fraction < 1:
            raise ImportFailure(f"--pool-fraction must be in (0, 1), got {self.pool_fraction}")


def _softmax_for(spec: ImportSpec, names: list[str]) -> set[str]:
    if spec.softmax is None:
        return set()
    if not spec.softmax:
        return set(names)
    unknown = sorted(set(spec.softmax) - set(names))
    if unknown:
        raise ImportFailure(f"--softmax names {', '.join(unknown)}, not models of this import ({', '.join(names)})")
    return set(spec.softmax)


def load_data(spec: ImportSpec, sample_shape, n_classes) -> Dataset:
    """The zoo's data file: test and attacker_pool splits (flat samples, as psml stores them), no victim_train."""
    rng = np.random.default_rng(spec.seed)
    if spec.data.is_dir():
        name, x, y, folder_pool = load_folder(spec.data, sample_shape, n_classes)
    else:
        name, folder_pool = spec.data.stem, None
        x, y = load_eval_data(spec.data, sample_shape, n_classes)
    if spec.attacker_pool is not None or folder_pool is not None:
        pool = load_pool(spec.attacker_pool, sample_shape) if spec.attacker_pool is not None else folder_pool
        test_x, test_y, pool_y = x, y, np.full(len(pool), -1, np.int64)  # the attacker's labels come from the victim
    else:
        order = rng.permutation(len(y))
        n_pool = int(round(spec.pool_fraction * len(y)))
        if n_pool < 1 or len(y) - n_pool < 2:
            raise ImportFailure(f"{spec.data}: {len(y)} samples are too few to split into test and attacker pool")
        test_idx, pool_idx = order[n_pool:], order[:n_pool]
        test_x, test_y, pool, pool_y = x[test_idx], y[test_idx], x[pool_idx], np.full(n_pool, -1, np.int64)
    dim = int(np.prod(sample_shape))
    flat = lambda a: a.reshape(len(a), dim)
    xs = {"victim_train": np.zeros((0, dim), np.float32), "test": flat(test_x), "attacker_pool": flat(pool)}
    ys = {"victim_train": np.zeros(0, np.int64), "test": test_y, "attacker_pool": pool_y}
    assert set(xs) == set(SPLITS)
    return Dataset(name, tuple(sample_shape), n_classes, xs, ys, spec.seed)


def import_zoo(spec: ImportSpec, out_root: Path, log=print) -> Path:
    """Import ``spec`` into ``out_root/<spec.name>`` atomically; returns that folder."""
    started = time.perf_counter()
    check_name(spec.name, "zoo name", "--name")
    originals = [inspect_onnx(p) for p in spec.onnx_files]
    sample_shape, n_classes = check_zoo(originals)
    with_softmax = _softmax_for(spec, [m.name for m in originals])
    data = load_data(spec, sample_shape, n_classes)
    x_test = data.x["test"].reshape(-1, *sample_shape)
    log(f"data: {data.name}, sample shape {list(sample_shape)}, {n_classes} classes, splits {data.sizes()}")

    final = Path(out_root) / spec.name
    with staged_folder(final) as work:
        (work / "onnx").mkdir()
        entries, served, probs_by_model = {}, {}, {}
        for m in originals:
            if m.name in with_softmax and answers_probabilities(m, x_test[:64]):
                raise ImportFailure(f"{m.path}: already answers probabilities; --softmax would flatten them "
                                    f"(leave it out of --softmax)")
            path = work / "onnx" / f"{m.name}.onnx"
            softmax_appended, made_dynamic = prepare_onnx(m, m.name in with_softmax, path)
            prepared = replace(inspect_onnx(path, m.name), dynamic_batch=True, max_batch=None)
            probs = check_prepared(m, prepared, x_test, m.name in with_softmax)
            probs_by_model[m.name] = probs
            acc = float(np.mean(probs.argmax(1) == data.y["test"]))
            log(f"  {m.name:<16} {m.parameters:>11,d} params  acc {acc:.3f}"
                + ("  +softmax" if softmax_appended else "") + ("  batch axis made dynamic" if made_dynamic else ""))
            io = ModelIO(sample_shape, n_classes, m.input_name, m.output_name)
            served[m.name] = (path, io)
            entries[m.name] = dict(
                name=m.name, architecture="imported", parameters=m.parameters,
                onnx_file=f"onnx/{m.name}.onnx", onnx_sha256=sha256(path),
                input=dict(name=m.input_name, dtype="FP32", shape=[-1, *sample_shape]),
                output=dict(name=m.output_name, dtype="FP32", shape=[-1, n_classes]),
                accuracy=acc, parity=None, train_seconds=0.0,
                source=dict(file=str(m.path.resolve()), sha256=sha256(m.path), softmax_appended=softmax_appended,
                            batch_axis_made_dynamic=made_dynamic))
        render(served, work, spec.repository)
        data.save(work / DATA_FILE)
        header = dict(
            zoo=dict(name=spec.name, origin="imported", seed=spec.seed,
                     created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"), build_seconds=0.0,
                     dataset=dict(name=data.name, sample_shape=list(sample_shape), n_classes=n_classes,
                                  split_sizes=data.sizes(), data_file=DATA_FILE, seed=spec.seed)),
            settings=dict(repository=asdict(spec.repository),
                          imported=dict(files=[str(p) for p in spec.onnx_files], data=str(spec.data),
                                        attacker_pool=str(spec.attacker_pool) if spec.attacker_pool else None,
                                        softmax=sorted(with_softmax), pool_fraction=spec.pool_fraction)))
        tensors = {name: io for name, (_, io) in served.items()}

        def check_served(url: str) -> None:  # Triton's answers must be the file's own, before anything is timed
            for name, entry in entries.items():
                entry["parity"] = served_parity(url, name, tensors[name], x_test[:PARITY_SAMPLES],
                                                probs_by_model[name][:PARITY_SAMPLES], originals)

        profiling = replace(spec.profiling, seed=spec.seed)

        def provisional(direct_results):  # the profiling router reads a manifest: write one from the direct path
            save_manifest(compose_manifest(header, entries, direct_results, _direct_only(profiling)),
                          work / MANIFEST_NAME)

        try:
            results = profile_zoo(work, list(entries), data.x["test"], profiling,
                                  log=log, before_router=provisional if "router" in profiling.paths else None,
                                  tensors=tensors, after_triton=check_served)
        except ModelLoadError as e:
            source = next((m.path for m in originals if f"'{m.name}'" in str(e)), None)
            raise ImportFailure(f"{source or 'a model'}: {e}") from None
        except TritonError as e:
            raise ImportFailure(f"Triton could not serve the imported zoo: {e}") from None
        header["zoo"]["build_seconds"] = time.perf_counter() - started
        save_manifest(compose_manifest(header, entries, results, profiling),
                      work / MANIFEST_NAME)
    return final


def served_parity(url: str, name: str, io: ModelIO, x: np.ndarray, expected: np.ndarray, originals) -> dict:
    """Triton's answers for ``x`` against onnxruntime's on the same prepared file."""
    client = io.direct_client(url, name)
    try:
        got = np.concatenate([client.infer(x[i : i + 64]) for i in range(0, len(x), 64)])
    finally:
        client.close()
    diff = float(np.max(np.abs(got - expected)))
    mismatches = int(np.sum(got.argmax(1) != expected.argmax(1)))
    if diff > PARITY_TOLERANCE or mismatches:
        source = next(m.path for m in originals if m.name == name)
        raise ImportFailure(f"{source}: Triton's answers differ from onnxruntime's on the same file (max |dp| "
                            f"{diff:.2e}, {mismatches}/{len(x)} top-1 labels)")
    return {"max_abs_diff": diff, "top1_mismatches": mismatches, "n": int(len(x))}
