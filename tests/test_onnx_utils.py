"""ONNX export, parity against torch, int8 quantization, and the session factory."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from shared.errors import ArtifactError, CasebookError
from shared.onnx_utils import check_parity, export_onnx, make_session, quantize_dynamic_onnx


class _TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 8) -> (B, 4)


class _TinyLSTM(nn.Module):
    """Embedding -> LSTM -> Linear, returning logits and the final hidden state."""

    def __init__(self, vocab: int = 50, dim: int = 16, hidden: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, (h_n, _) = self.lstm(self.emb(ids))  # (B, T, H), (1, B, H)
        return self.out(h), h_n


@pytest.fixture(scope="module")
def lstm_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = _TinyLSTM().eval()
    path = tmp_path_factory.mktemp("onnx") / "lstm.onnx"
    export_onnx(
        model,
        (torch.randint(0, 50, (2, 5)),),
        path,
        ["ids"],
        ["logits", "h_n"],
        dynamic_axes={
            "ids": {0: "batch", 1: "seq"},
            "logits": {0: "batch", 1: "seq"},
            "h_n": {1: "batch"},
        },
    )
    return model, path


def test_mlp_export_parity_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = _TinyMLP()
    model.train()
    path = export_onnx(
        model,
        (torch.randn(3, 8),),
        tmp_path / "mlp.onnx",
        ["x"],
        ["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    )
    assert model.training, "export must restore the training flag"
    onnx.checker.check_model(str(path))
    session = make_session(path)
    for batch in (1, 3, 17):
        assert check_parity(model, session, (torch.randn(batch, 8),), atol=1e-4) <= 1e-4


def test_lstm_export_parity_dynamic_batch_and_sequence(lstm_onnx):
    model, path = lstm_onnx
    graph = onnx.load(str(path)).graph
    assert "LSTM" in {n.op_type for n in graph.node}  # the fused op, not an unrolled loop
    session = make_session(path)
    for shape in ((1, 1), (2, 5), (4, 13)):
        diff = check_parity(model, session, (torch.randint(0, 50, shape),), atol=1e-4)
        assert 0.0 <= diff <= 1e-4


def test_gru_export_parity(tmp_path):
    torch.manual_seed(0)
    emb, gru = nn.Embedding(30, 8), nn.GRU(8, 16, batch_first=True, num_layers=2)

    class _TinyGRU(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.gru = emb, gru

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.gru(self.emb(ids))[0]  # (B, T, 16)

    model = _TinyGRU().eval()
    axes = {"ids": {0: "batch", 1: "seq"}, "h": {0: "batch", 1: "seq"}}
    path = export_onnx(
        model, (torch.randint(0, 30, (2, 4)),), tmp_path / "g.onnx", ["ids"], ["h"], axes
    )
    assert "GRU" in {n.op_type for n in onnx.load(str(path)).graph.node}
    for shape in ((1, 1), (3, 11)):
        assert check_parity(model, path, (torch.randint(0, 30, shape),)) <= 1e-4


def test_int8_quantization_runs_and_stays_close(lstm_onnx, tmp_path):
    model, path = lstm_onnx
    q = quantize_dynamic_onnx(path, tmp_path / "lstm.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert "DynamicQuantizeLSTM" in ops
    ids = torch.randint(0, 50, (4, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids)[0].numpy()
    got = make_session(q).run(None, {"ids": ids.numpy()})[0]
    assert got.shape == ref.shape
    # int8 weights: close, not identical. Mean error under 10% of the mean logit magnitude.
    err = np.abs(got - ref)
    assert 0 < err.mean() < 0.1 * np.abs(ref).mean()
    # Same top-1 for the large majority of positions.
    assert (got.argmax(-1) == ref.argmax(-1)).mean() > 0.8


def test_parity_fails_for_a_different_model(lstm_onnx):
    _, path = lstm_onnx
    torch.manual_seed(1)
    other = _TinyLSTM().eval()  # same architecture, different weights
    with pytest.raises(CasebookError, match="max abs diff"):
        check_parity(other, path, (torch.randint(0, 50, (2, 5)),), atol=1e-4)


def test_parity_reports_shape_mismatch(tmp_path):
    model = _TinyMLP()
    path = export_onnx(model, (torch.randn(2, 8),), tmp_path / "m.onnx", ["x"], ["y"])
    wider = nn.Sequential(nn.Linear(8, 5))
    with pytest.raises(CasebookError, match="shape"):
        check_parity(wider, path, (torch.randn(2, 8),))


def test_make_session_options_and_errors(tmp_path):
    path = export_onnx(_TinyMLP(), (torch.randn(2, 8),), tmp_path / "m.onnx", ["x"], ["y"])
    session = make_session(path, threads=2, spinning=False)
    opts = session.get_session_options()
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ArtifactError, match="not found"):
        make_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="cannot load"):
        make_session(tmp_path / "junk.onnx")
