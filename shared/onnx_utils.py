"""ONNX export with a parity check, dynamic int8 quantization, and an onnxruntime session factory.

    axes = {"ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    path = export_onnx(model, (ids,), "model.onnx", ["ids"], ["logits"], dynamic_axes=axes)
    max_diff = check_parity(model, path, (ids,))          # raises CasebookError over atol
    quantize_dynamic_onnx(path, "model.int8.onnx")
    session = make_session("model.int8.onnx", threads=1)

Exporter choice (measured with torch 2.13 / onnxscript 0.7 / onnxruntime 1.32 on 2 CPU cores):
both the legacy TorchScript exporter (`dynamo=False`) and the torch.export-based one
(`dynamo=True`, the default since torch 2.9) export Embedding + nn.LSTM / nn.GRU + Linear to the
fused ONNX LSTM/GRU ops with max abs diff < 1e-7 against torch, and onnxruntime quantizes both
to DynamicQuantizeLSTM. We use the legacy exporter because
  * it keeps a dynamic sequence axis in the graph's declared output shape; the dynamo exporter
    specialised `seq` to the example length in the output type (onnxruntime then warns
    "Expected shape ... does not match actual shape" on every other length),
  * it takes about 0.4 s per small model against 10-16 s for dynamo, which matters for tests,
  * it reads the familiar `dynamic_axes` argument directly.
If a future torch removes the legacy exporter, `export_onnx` falls back to `dynamo=True`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import ArtifactError, CasebookError, first_line
from shared.io import staged


def _flatten(out: Any) -> list[Any]:
    """Model outputs (tensor, tuple/list, dict, nested) as a flat list in ONNX output order."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    return [out]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def export_onnx(
    model: Any,
    example_inputs: tuple,
    path: str | os.PathLike,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
    opset: int = 17,
) -> Path:
    """Export `model` (put in eval mode for the export) to ONNX at `path`, atomically.

    Args:
        model: a torch.nn.Module; its `forward(*example_inputs)` is traced.
        example_inputs: a tuple of tensors with representative shapes (batch > 1 is fine).
        input_names / output_names: graph names, in order.
        dynamic_axes: {name: {axis: "symbol"}} for axes that vary (batch, sequence length).
        opset: ONNX opset (17 is supported by every onnxruntime we pin).

    Returns the path. The graph is checked with onnx.checker before it is moved into place.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = getattr(model, "training", False)
    model.eval()
    kwargs = dict(
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=opset,
    )
    try:
        with staged(path) as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                # The legacy exporter warns that it is legacy, and the tracer warns about Python
                # control flow inside nn.LSTM; the parity check below is the real guard.
                warnings.simplefilter("ignore")
                try:
                    torch.onnx.export(
                        model, tuple(example_inputs), str(tmp), dynamo=False, **kwargs
                    )
                except (TypeError, NotImplementedError, ImportError):
                    # Legacy exporter gone (future torch): the torch.export-based one.
                    torch.onnx.export(model, tuple(example_inputs), str(tmp), dynamo=True, **kwargs)
            onnx.checker.check_model(str(tmp))
            os.replace(tmp, path)
    finally:
        model.train(was_training)
    return path


def make_session(path: str | os.PathLike, threads: int = 1, spinning: bool = False) -> Any:
    """An onnxruntime CPU InferenceSession with predictable threading.

    intra_op threads = `threads`, inter_op = 1 (sequential execution), all graph optimizations.
    With `spinning=False` idle worker threads sleep instead of busy-waiting: spinning threads
    slow down other work in the same process (Ray Serve replicas, a torch model beside it).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model {path} not found")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; shape-inference warnings are noise for us
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        msg = first_line(e)
        raise ArtifactError(f"cannot load ONNX model {path}: {msg}") from None


def check_parity(
    model: Any, onnx_path_or_session: Any, example_inputs: tuple, atol: float = 1e-4
) -> float:
    """Max abs difference between torch and onnxruntime outputs on `example_inputs`.

    max_diff = max over outputs o and elements i of |torch_o[i] - onnx_o[i]|.
    Raises CasebookError if an output's shape differs, a value is NaN, or max_diff > atol.
    """
    import torch

    session = onnx_path_or_session
    if isinstance(session, (str, os.PathLike)):
        session = make_session(session)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.no_grad():
            expected = [_to_numpy(t) for t in _flatten(model(*example_inputs))]
    finally:
        model.train(was_training)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(example_inputs):
        raise CasebookError(
            f"ONNX parity: the graph takes {len(names)} inputs, {len(example_inputs)} were given"
        )
    feeds = {n: _to_numpy(x) for n, x in zip(names, example_inputs, strict=True)}
    got = session.run(None, feeds)
    if len(got) != len(expected):
        raise CasebookError(
            f"ONNX parity: {len(got)} outputs from ONNX, {len(expected)} from torch"
        )
    out_names = [o.name for o in session.get_outputs()]
    worst = 0.0
    for name, e, g in zip(out_names, expected, got, strict=True):
        if e.shape != g.shape:
            raise CasebookError(f"ONNX parity: output {name} has shape {g.shape}, torch {e.shape}")
        if e.size == 0:
            continue
        diff = float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64))))
        if not np.isfinite(diff):
            raise CasebookError(f"ONNX parity: output {name} has NaN or infinite differences")
        if diff > atol:
            raise CasebookError(
                f"ONNX parity failed: output {name} max abs diff {diff:.3g} > atol {atol:g}"
            )
        worst = max(worst, diff)
    return worst


class _DropPreprocessHint(logging.Filter):
    """onnxruntime's quantizer logs a 'consider pre-processing' hint on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


def quantize_dynamic_onnx(
    src: str | os.PathLike, dst: str | os.PathLike, per_channel: bool = False
) -> Path:
    """Dynamic int8 quantization (QInt8 weights, activations quantized per batch at run time).

    MatMul/Gemm become MatMulInteger and LSTM becomes DynamicQuantizeLSTM. Written atomically.
    `per_channel`: one weight scale per output channel instead of one per tensor, w ~ q_c * s_c
    with s_c = max|w_c| / 127: on a MiniLM tower it lost 0.4 points where per tensor lost 2.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ArtifactError(f"ONNX model {src} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    hint = _DropPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        with staged(dst, suffix=".onnx") as tmp:  # the quantizer wants an .onnx name
            quantize_dynamic(
                model_input=str(src),
                model_output=str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
            )
            os.replace(tmp, dst)
    finally:
        root.removeFilter(hint)
    return dst
