"""The exported graph's signature (input names, dtypes, widths), shared by export and the
backends. Torch-free."""

from __future__ import annotations

import numpy as np

from rankmixer.data.feature_map import FeatureMap

OUTPUT_NAME = "scores"


def graph_inputs(fm: FeatureMap) -> list[tuple[str, str, int]]:
    """(input name, dtype, width) of the graph, in order. Empty dense / sparse parts are left
    out (a zero-width input is awkward for ONNX and Triton); bags and sequences are named
    ``bag__<name>`` / ``seq__<name>``; a behaviour is ``beh__<name>``, its ``[max_len, fields]``
    ids flattened row-major to ``max_len * fields`` (every input stays ``[batch, width]``)."""
    out: list[tuple[str, str, int]] = []
    if fm.dense:
        out.append(("dense", "float32", len(fm.dense)))
    if fm.sparse:
        out.append(("sparse", "int64", len(fm.sparse)))
    out += [(f"bag__{f.name}", "int64", f.max_len) for f in fm.bags]
    out += [(f"seq__{f.name}", "int64", f.max_len) for f in fm.sequences]
    out += [(f"beh__{f.name}", "int64", f.max_len * len(f.fields)) for f in fm.behaviours]
    return out


def arrays_to_inputs(arrays: dict[str, np.ndarray], fm: FeatureMap) -> dict[str, np.ndarray]:
    """The loader's / preprocessor's arrays (``sparse``, ``dense``, ``bag:x``, ``seq:x``,
    ``beh:x``) keyed by graph input name (behaviours flattened to ``[n, width]``)."""
    key = {"dense": "dense", "sparse": "sparse"}
    out = {}
    for name, _, width in graph_inputs(fm):
        a = arrays[key.get(name) or name.replace("__", ":", 1)]
        out[name] = a.reshape(a.shape[0], width) if name.startswith("beh__") else a
    return out
