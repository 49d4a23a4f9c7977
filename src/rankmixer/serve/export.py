"""``rankmixer export``: a trained run -> a self-contained serving artifact.

Artifact layout (everything a server needs; nothing points back at the run or the data)::

    manifest.json        model name and version, format, schema hash, tasks, the graph's input
                         and output names and shapes, the request inputs, the files' sha256
    feature_map.json     the run's feature map (vocabulary sizes, fields, tasks)
    preprocess.json      the preprocessing spec: schema, vocabularies (value -> id), numerical
                         statistics and bucket boundaries, OOV/pad ids, list max lengths
    model.onnx           format onnx: the graph, weights inside (torch.onnx dynamo exporter)
    model.pt             format torchscript: a traced module (TorchScript archive)
    model.pt2            format pt2: a torch.export ExportedProgram
    model.safetensors    format eager: the weights; the model is rebuilt from manifest.config
                         with the registry (the only format that keeps data-dependent code such
                         as MoE sparse inference)
    triton/<model>/config.pbtxt, triton/<model>/1/model.onnx   (format onnx) a Triton model
                         repository entry: scores encoded ids (see docs/serving.md)

manifest.json lists every other file with its sha256 (relative paths inside the artifact); a
server refuses an artifact with a file missing, changed or unlisted. The folder also holds the
ownership marker ``.rankmixer-output`` (see core/files.py), which is not content.

The graph scores *encoded* ids (``dense [B, n_dense] float32``, ``sparse [B, n_sparse] int64``,
one ``[B, max_len] int64`` input per bag / sequence) and returns ``scores [B, n_tasks]``
probabilities; raw values become ids with preprocess.json (see ``preprocess.py``). The batch
dimension is dynamic in every format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from rankmixer.core.files import atomic_directory, check_output, check_replaceable, sha256_file
from rankmixer.core.rundir import BEST_WEIGHTS
from rankmixer.core.weights import save_weights
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.schema import load_schema
from rankmixer.runs import TrainedRun, incomplete_reason, load_run
from rankmixer.serve.preprocess import build_spec
from rankmixer.serve.signature import OUTPUT_NAME, graph_inputs

Format = Literal["onnx", "torchscript", "pt2", "eager"]
FORMATS = ("onnx", "torchscript", "pt2", "eager")
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "pt2": "model.pt2", "eager": "model.safetensors"}
ARTIFACT_VERSION = 1


class ScoringModule(nn.Module):
    """The model behind a flat tensor signature: graph inputs in :func:`graph_inputs` order
    -> probabilities [B, n_tasks]. Labels are not inputs (models never read them)."""

    def __init__(self, model: nn.Module, fm: FeatureMap) -> None:
        super().__init__()
        self.model = model
        self.names = [n for n, _, _ in graph_inputs(fm)]
        self.n_dense, self.n_sparse, self.n_tasks = len(fm.dense), len(fm.sparse), fm.num_tasks
        self.behaviour_shape = {f.name: (f.max_len, len(f.fields)) for f in fm.behaviours}

    def forward(self, *inputs: Tensor) -> Tensor:
        by_name = dict(zip(self.names, inputs))
        ref = inputs[0]
        B = ref.shape[0]
        dense = by_name["dense"] if "dense" in by_name else ref.new_zeros((B, 0), dtype=torch.float32)
        sparse = by_name["sparse"] if "sparse" in by_name else ref.new_zeros((B, 0), dtype=torch.int64)
        batch = Batch(
            dense=dense, sparse=sparse, labels=dense.new_zeros((B, self.n_tasks)),
            bags={n[5:]: t for n, t in by_name.items() if n.startswith("bag__")},
            sequences={n[5:]: t for n, t in by_name.items() if n.startswith("seq__")},
            behaviours={n[5:]: t.reshape(t.shape[0], *self.behaviour_shape[n[5:]])
                        for n, t in by_name.items() if n.startswith("beh__")},
        )
        return torch.sigmoid(self.model(batch).logits.float())


def example_inputs(fm: FeatureMap, batch: int = 3) -> tuple[Tensor, ...]:
    """Valid example inputs (id 1 = OOV everywhere, lists half padded) for tracing."""
    out = []
    for name, dtype, width in graph_inputs(fm):
        if dtype == "float32":
            out.append(torch.zeros(batch, width))
        else:
            t = torch.ones(batch, width, dtype=torch.int64)
            if name != "sparse":
                t[:, width // 2 + 1 :] = 0
            out.append(t)
    return tuple(out)


def uses_sparse_moe(model: nn.Module) -> bool:
    """True if the model has an MoE layer that runs sparse (data-dependent) inference in eval."""
    from rankmixer.nn.moe import PerTokenMoE

    return any(isinstance(m, PerTokenMoE) and m.cfg.sparse_inference for m in model.modules())



def _export_onnx(module: ScoringModule, fm: FeatureMap, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError as e:
        raise ValueError("format onnx needs the onnx extra: pip install -c constraints/cpu.txt -e '.[onnx]'") from e
    from rankmixer.nn.embedding import FeatureEmbedding

    for m in module.modules():
        if isinstance(m, FeatureEmbedding):
            m.fused_bags = False  # see FeatureEmbedding: embedding_bag exports as a slow Loop
    names = [n for n, _, _ in graph_inputs(fm)]
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    import logging

    # The exporter logs a line per op library it skips (e.g. torchvision): not our concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # optimize=False: torch.onnx's rewriter folds ``x / (n + 1e-12)`` into ``x / n`` (FuxiCTR's
    # masked mean pooling), so an empty history would score NaN; onnxruntime optimises the graph
    # itself when it loads it.
    prog = torch.onnx.export(
        module, example_inputs(fm), dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
        dynamic_shapes={"inputs": tuple({0: batch} for _ in names)},
        optimize=False, verbose=False,
    )
    prog.save(str(path))


def _export_pt2(module: ScoringModule, fm: FeatureMap, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    prog = torch.export.export(module, example_inputs(fm), dynamic_shapes={"inputs": tuple({0: batch} for _ in graph_inputs(fm))})
    torch.export.save(prog, str(path))


def _export_torchscript(module: ScoringModule, fm: FeatureMap, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        # Shape checks in the model become constants of the trace: right, since they are.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example_inputs(fm), check_trace=False)
    traced.save(str(path))


def _triton_config(name: str, fm: FeatureMap, max_batch: int) -> str:
    """A Triton model configuration for the ONNX graph (onnxruntime backend, dynamic batching).
    Triton's dims leave out the batch dimension when max_batch_size > 0."""
    types = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch}", "input ["]
    ins = [f'  {{ name: "{n}" data_type: {types[d]} dims: [ {w} ] }}' for n, d, w in graph_inputs(fm)]
    lines.append(",\n".join(ins))
    lines += ["]", "output [", f'  {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ {fm.num_tasks} ] }}', "]",
              "dynamic_batching { max_queue_delay_microseconds: 2000 }",
              "instance_group [ { kind: KIND_CPU count: 1 } ]", ""]
    return "\n".join(lines)


ARTIFACT_KIND = "artifact"  # the ownership marker's kind (core/files.py)


def _legacy_artifact(path: Path) -> bool:
    """An artifact written before ownership markers existed: its manifest names its version."""
    try:
        return "artifact_version" in json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def export_run(
    run_dir: str | Path,
    fmt: str,
    out_dir: str | Path,
    *,
    version: str | None = None,
    triton_max_batch: int = 1024,
    overwrite: bool = False,
    log=print,
) -> Path:
    """Export a run's best model as an artifact directory (see the module docstring).

    ``out_dir`` may not be, contain or lie inside the run or its prepared data. An existing
    artifact there is replaced only with ``overwrite``; a folder of other files never is. The
    artifact is built in a temporary sibling and renamed into place, so a failed export leaves
    the old one (or nothing)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(triton_max_batch, bool) or not isinstance(triton_max_batch, int) or triton_max_batch < 1:
        raise ValueError(f"triton_max_batch must be a positive integer, got {triton_max_batch!r}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_output(out_dir, [run_dir], "--out")
    run = load_run(run_dir)
    fm, model = run.feature_map, run.model  # fm: the prepared data's map (vocab/ next to it)
    check_output(out_dir, [fm.root], "--out")
    check_replaceable(out_dir, ARTIFACT_KIND, overwrite, legacy=_legacy_artifact)
    reason = incomplete_reason(run_dir)
    if reason:
        log(f"warning: {reason}; exporting its best weights so far")
    if fm.root is None or not (fm.root / "schema.yaml").exists():
        raise FileNotFoundError(f"the run's prepared data ({fm.root}) is needed to export its vocabularies")
    schema = load_schema(fm.root / "schema.yaml")
    model.eval()
    sparse_moe = uses_sparse_moe(model)
    if sparse_moe and fmt != "eager":
        raise ValueError(
            f"model {run.model_name} runs sparse MoE inference (data-dependent: only the active experts "
            f"are computed), which a static graph ({fmt}) cannot hold; export it with --format eager "
            "(torch, sparse inference kept)")
    version = version or f"{run_dir.name}-{sha256_file(run_dir / BEST_WEIGHTS)[:12]}"
    with atomic_directory(out_dir, ARTIFACT_KIND, overwrite=overwrite, legacy=_legacy_artifact) as tmp:
        _write_artifact(tmp, run, fm, schema, fmt, version, sparse_moe, triton_max_batch)
    log(f"exported {run.model_name} ({fmt}) to {out_dir}")
    return out_dir


def _write_artifact(out_dir: Path, run: TrainedRun, fm: FeatureMap, schema, fmt: str, version: str, sparse_moe: bool,
                    triton_max_batch: int) -> None:
    """The artifact's files in ``out_dir``; the manifest, written last, lists every one of them."""
    saved_fm, model, name = run.saved_map, run.model, run.model_name
    module = ScoringModule(model, saved_fm).eval()
    model_path = out_dir / MODEL_FILES[fmt]
    with torch.no_grad():
        if fmt == "onnx":
            _export_onnx(module, saved_fm, model_path)
        elif fmt == "pt2":
            _export_pt2(module, saved_fm, model_path)
        elif fmt == "torchscript":
            _export_torchscript(module, saved_fm, model_path)
        else:
            save_weights(model_path, model)
    fm_dict = saved_fm.to_dict()
    fm_dict["splits"] = {}  # the artifact carries no data files
    (out_dir / "feature_map.json").write_text(json.dumps(fm_dict, indent=2))
    (out_dir / "preprocess.json").write_text(json.dumps(build_spec(fm, schema)))
    if fmt == "onnx":
        tdir = out_dir / "triton" / name
        (tdir / "1").mkdir(parents=True)
        shutil.copyfile(model_path, tdir / "1" / "model.onnx")
        (tdir / "config.pbtxt").write_text(_triton_config(name, saved_fm, triton_max_batch))
    # Every file, so a loader can refuse anything added, removed or changed (artifact.py).
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    manifest = {
        "artifact_version": ARTIFACT_VERSION,
        "model": name,
        "version": version,
        "format": fmt,
        "model_file": MODEL_FILES[fmt],
        "schema_hash": saved_fm.schema_hash,
        "dataset": saved_fm.dataset,
        "tasks": list(saved_fm.labels),
        "inputs": [{"name": n, "dtype": d, "shape": ["batch", w]} for n, d, w in graph_inputs(saved_fm)],
        "outputs": [{"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", saved_fm.num_tasks],
                     "meaning": "probability per task, columns in 'tasks' order"}],
        "sparse_moe": sparse_moe,
        # eager: the registry rebuilds the model from these (plain JSON, no code).
        "config": {"model_name": name, "model_params": run.model_params}
        if fmt == "eager" else None,
        "torch_version": torch.__version__,
        "sha256": {f: sha256_file(out_dir / f) for f in files},
        "run": str(run.run_dir),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
