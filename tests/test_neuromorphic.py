"""Spiking conversion and the neuromorphic targets: accuracy kept, NIR round trip, Lava against torch, energy formula,
one-line errors. Small models trained here for a few epochs; bench/neuromorphic.py measures the bundled examples."""
from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
import torch.nn as nn

from edgekit import api
from edgekit.cli import main
from edgekit.converters import to_spiking
from edgekit.converters.finetune import TrainSettings, fine_tune
from edgekit.datasets import digits
from edgekit.errors import UnsupportedError, UsageError
from edgekit.layers import EGRU, LMU
from edgekit.layers.spiking import find_network
from edgekit.model import Model
from edgekit.targets.neuromorphic.nir_export import round_trip, to_nir


@pytest.fixture(scope="module")
def mlp() -> Model:
    """A ReLU MLP on the 8x8 digits, trained here (~95 %)."""
    torch.manual_seed(0)
    split = digits()
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    fine_tune(module, split.x_train, split.y_train, TrainSettings(epochs=20, lr=3e-3), progress=False)
    return Model.from_module(module, torch.from_numpy(split.x_test[:1]), name="mlp", calib=split.x_train[:64],
                             test_x=split.x_test, test_y=split.y_test, train_x=split.x_train, train_y=split.y_train)


@pytest.fixture(scope="module")
def snn(mlp) -> Model:
    return to_spiking(mlp, timesteps=16, fine_tune_epochs=3, progress=False)


@pytest.fixture(scope="module")
def loihi_out(snn, tmp_path_factory):
    return api.compile(snn, "loihi2", tmp_path_factory.mktemp("nm") / "loihi2")


def test_rate_conversion_keeps_accuracy(mlp, snn):
    ann = mlp.accuracy()
    sp = snn.meta["spiking"]
    assert ann > 0.9
    assert sp["accuracy"] == pytest.approx(snn.accuracy())
    assert sp["accuracy"] >= ann - 0.03, (ann, sp)
    # activity is reported per population (input, hidden IF neurons) and connection
    assert [p["kind"] for p in sp["populations"].values()] == ["input", "lif"]
    hidden = next(p for p in sp["populations"].values() if p["kind"] == "lif")
    assert hidden["neurons"] == 32 and 0.0 < hidden["firing_rate"] < 1.0
    assert sp["synaptic_ops_per_inference"] == pytest.approx(
        sum(c["sops_per_inference"] for c in sp["connections"].values() if not c["graded"]))
    assert sp["spikes_per_inference"] > 0


def test_nir_file_reads_back_unchanged(snn, loihi_out, monkeypatch):
    path = loihi_out.path / "model.nir"
    assert loihi_out.report["build"]["nir"]["round_trip"].startswith("unchanged")
    graph = nir.read(str(path), type_check=False)
    net = find_network(snn.module)
    # the file holds the network's own numbers: IF neurons (β = 1), the hidden layer's weights with its bias
    assert any(isinstance(n, nir.IF) for n in graph.nodes.values())
    hidden = next(n for n in graph.nodes.values() if isinstance(n, nir.Affine) and n.weight.shape == (32, 64))
    conn = next(c for c in net.connections.values() if c.weight.shape == (32, 64))
    assert np.array_equal(hidden.weight, conn.weight.detach().numpy())
    # the check itself sees a change: a reader that alters one threshold is caught
    written, _ = to_nir(net)
    assert round_trip(written, loihi_out.path / "again.nir") == []
    real_read = nir.read

    def altered_read(*a, **kw):
        g = real_read(*a, **kw)
        next(v for v in g.nodes.values() if isinstance(v, nir.IF)).v_threshold[0] += 1e-6
        return g

    monkeypatch.setattr(nir, "read", altered_read)
    assert any("v_threshold" in d for d in round_trip(written, loihi_out.path / "altered.nir"))


def test_lava_agrees_with_torch(loihi_out):
    art = api.profile(loihi_out.path, samples=20)
    m = art.measured
    assert m["samples"] == 20
    assert m["lava_agreement"] >= 0.99
    fid = m["fidelity"]  # Lava's readout against the ANN the network was converted from
    assert fid["inputs"] == 20 and fid["top1_agreement"] >= 0.85 and "ANN" in fid["against"]
    # non-leaky neurons on Loihi's grid: Lava's integers give the very same spikes
    assert m["identical_spike_counts"] == 1.0
    assert m["synaptic_ops"] == pytest.approx(m["synaptic_ops_torch"], rel=1e-6)
    assert m["energy_uj"] > 0


def test_energy_matches_hand_computation(snn, loihi_out):
    sp = snn.meta["spiking"]
    est = loihi_out.report["estimate"]
    # Loihi: 23.6 pJ per synaptic op, 81 pJ per neuron update (Davies et al. 2018)
    hand = (23.6 * (sp["synaptic_ops_per_inference"] + sp["graded_ops_per_inference"])
            + 81 * sp["neuron_updates_per_inference"]) * 1e-6
    assert est["energy_uj"] == pytest.approx(hand, rel=1e-9)
    # neuron updates: 32 hidden IF neurons + 10 readout neurons, 16 steps
    assert sp["neuron_updates_per_inference"] == (32 + 10) * 16
    # 45 nm convention: first layer computed once per image (64 x 32 MACs), the rest accumulates
    energy = loihi_out.report["build"]["energy"]
    nonzero_first = int((find_network(snn.module).connections["input_to_1"].weight != 0).sum())
    assert energy["energy_45nm_uj"] == pytest.approx(
        (4.6 * nonzero_first + 0.9 * sp["synaptic_ops_per_inference"]) * 1e-6, rel=1e-9)
    breakdown = loihi_out.report["energy_breakdown"]
    assert sum(breakdown.values()) == pytest.approx(est["energy_uj"])
    # SpiNNaker 2 prices the same activity with its own constants (450 pJ, 2.19 nJ)
    e2, _, _ = api.estimate(snn, "spinnaker2")
    assert e2.energy_uj == pytest.approx((450 * (sp["synaptic_ops_per_inference"] + sp["graded_ops_per_inference"])
                                          + 2190 * sp["neuron_updates_per_inference"]) * 1e-6, rel=1e-9)


def test_non_spiking_model_is_a_one_line_error(mlp, snn, tmp_path, capsys):
    with pytest.raises(UnsupportedError, match="to_spiking") as e:
        api.compile(mlp, "loihi2", tmp_path / "x")
    assert "\n" not in str(e.value)
    assert main(["compile", "digits-cnn", "--target", "loihi2", "-o", str(tmp_path / "y")]) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "to_spiking" in err[0]
    with pytest.raises(UsageError, match="already a spiking network"):
        to_spiking(snn)


class TinyLMU(nn.Module):
    def __init__(self):
        super().__init__()
        self.lmu = LMU(1, 8, memory_size=4, theta=8.0)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.lmu(x)[0][:, -1])


def test_spiking_lmu_memory_in_nir_and_lava(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((32, 8, 1)).astype(np.float32)
    y = (x[:, :4, 0].sum(1) > x[:, 4:, 0].sum(1)).astype(np.int64) + (x[:, 0, 0] > 0.5)
    ann = Model.from_module(TinyLMU(), torch.from_numpy(x[:1]), name="tiny-lmu", test_x=x[:6], test_y=y[:6],
                            train_x=x, train_y=y)
    snn = to_spiking(ann, kind="lmuformer", timesteps=4, fine_tune_epochs=1, embed=8, hidden=8, mixer=8,
                     progress=False)
    net = find_network(snn.module)
    graph, notes = to_nir(net)
    # the memory as a continuous LTI: an integrator with A/θ fed back through a Linear
    assert isinstance(graph.nodes["memory"], nir.I)
    assert ("memory", "memory_A") in graph.edges and ("memory_A", "memory") in graph.edges
    assert any("LTI" in n for n in notes)
    art = api.compile(snn, "loihi2", tmp_path / "lmu")
    desc = json.loads((art.path / "network.json").read_text())
    assert any(c["name"].startswith("memory_rec") for c in desc["connections"])
    m = api.profile(art.path).measured
    assert m["lava_agreement"] >= 0.99
    assert m["readout_max_abs_diff"] < 1e-2


class TinyEGRUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = EGRU(1, 12, threshold=0.05)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.gru(x)[1][0])


def test_egru_compiles_for_spinnaker2_only(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(1).random((16, 10, 1)).astype(np.float32)
    model = Model.from_module(TinyEGRUNet(), torch.from_numpy(x[:1]), name="tiny-egru", test_x=x,
                              test_y=np.zeros(16, np.int64))
    art = api.compile(model, "spinnaker2", tmp_path / "egru")
    assert (art.path / "egru.json").is_file() and not (art.path / "model.nir").exists()
    assert any("NIR cannot express the EGRU" in n for n in art.report["notes"])
    act = art.report["build"]["activity"]
    data = np.load(art.path / "testdata.npz")
    assert act["events_per_inference"] == pytest.approx(data["events"].mean())
    assert 0 < act["events_per_inference"] < 12 * 10
    measured = api.profile(art.path).measured
    assert measured["synaptic_ops"] == pytest.approx(act["synaptic_ops_per_inference"])
    with pytest.raises(UnsupportedError, match="spinnaker2"):
        api.compile(model, "loihi2", tmp_path / "egru-loihi")


def test_cli_converts_with_spiking_option(tmp_path, monkeypatch, capsys):
    """`edgekit compile digits-cnn -t spinnaker2 --spiking rate`: converted (one epoch here), compiled, NIR written;
    --spiking on a microcontroller target is a usage error."""
    from edgekit.converters import spiking as spiking_converter

    monkeypatch.setitem(spiking_converter.DEFAULTS, "rate", {**spiking_converter.DEFAULTS["rate"],
                                                            "fine_tune_steps": 23})
    out = tmp_path / "s2"
    assert main(["compile", "digits-cnn", "--target", "spinnaker2", "--spiking", "rate", "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["options"]["spiking"] == "rate"
    assert rep["build"]["activity"]["accuracy"] > 0.5
    assert (out / "model.nir").is_file()
    capsys.readouterr()
    assert main(["compile", "digits-cnn", "--target", "cortex-m7", "--spiking", "rate", "-o",
                 str(tmp_path / "m7")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--spiking" in err[0]
    assert not (tmp_path / "m7").exists()


def test_l2mu_runs_in_nir_and_lava(tmp_path):
    """L2MU: input module, u, memory and hidden all LIF populations (no graded population); NIR reads back, Lava
    agrees with torch on the predicted class."""
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    x = rng.random((32, 8, 1)).astype(np.float32)
    y = (x[:, :4, 0].sum(1) > x[:, 4:, 0].sum(1)).astype(np.int64)
    ann = Model.from_module(TinyLMU(), torch.from_numpy(x[:1]), name="tiny-lmu", test_x=x[:6], test_y=y[:6],
                            train_x=x, train_y=y)
    snn = to_spiking(ann, kind="l2mu", timesteps=2, fine_tune_epochs=1, encoder_size=4, u_size=2, progress=False)
    net = find_network(snn.module)
    kinds = {p.spec.kind for p in net.populations.values()}
    assert kinds == {"input", "lif", "readout"}
    assert set(net.populations) >= {"encoder", "u", "memory", "hidden"}
    art = api.compile(snn, "loihi2", tmp_path / "l2mu")
    assert art.report["build"]["nir"]["round_trip"].startswith("unchanged")
    m = api.profile(art.path).measured
    # leaky neurons too: the torch reference decays as Lava's 12-bit truncating multiply does, so the very spikes
    assert m["samples"] == 6 and m["lava_agreement"] == 1.0
    assert m["identical_spike_counts"] == 1.0 and m["readout_max_abs_diff"] < 1e-6


def test_bundled_examples_ship_their_spiking_conversion():
    """Compiling a bundled example for a neuromorphic chip uses its shipped conversion (seconds, not minutes of
    fine-tuning) — but only for the unchanged example with default settings."""
    import torch

    from edgekit.converters import spiking
    from edgekit.model import Model

    ann = Model.load("digits-cnn")
    snn = spiking.to_spiking(ann, kind="rate")
    assert "shipped" in snn.meta["spiking"]
    assert snn.meta["spiking"]["accuracy"] >= 0.97  # measured again on the test inputs
    changed = Model.load("digits-cnn")
    with torch.no_grad():
        next(changed.module.parameters()).mul_(0.5)
    assert spiking._shipped(changed, "rate", defaults=True) is None
    assert spiking._shipped(ann, "rate", defaults=False) is None


class _CausalConvNet(nn.Module):
    """A small keyword-CNN shape: conv with a causal crop along the frames, depthwise conv with its crop, 1x1 conv,
    global average pool, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, (3, 3), padding=(2, 1))
        self.dw = nn.Conv2d(8, 8, (3, 3), padding=(2, 1), groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))[:, :, :8]
        x = torch.relu(self.dw(x))[:, :, :8]
        x = torch.relu(self.pw(x))
        return self.fc(x.mean((2, 3)))


def test_rate_conversion_of_a_causal_depthwise_cnn_runs_in_lava(tmp_path):
    """Crops become part of the connection that computes the layer (no neuron is simulated that the ANN drops),
    depthwise convs become sparse synapse matrices, NIR carries the crops as node metadata, Lava agrees."""
    torch.manual_seed(0)
    split = digits()
    module = _CausalConvNet()
    fine_tune(module, split.x_train, split.y_train, TrainSettings(epochs=6, lr=3e-3), progress=False)
    ann = Model.from_module(module, torch.from_numpy(split.x_test[:1]), name="causal", calib=split.x_train[:64],
                            test_x=split.x_test[:64], test_y=split.y_test[:64], train_x=split.x_train,
                            train_y=split.y_train)
    snn = to_spiking(ann, "rate", timesteps=12, fine_tune_epochs=1, progress=False)
    net = find_network(snn.module)
    assert [p.spec.shape for p in net.populations.values() if p.spec.kind == "lif"] == [(8, 8, 8)] * 3
    crops = [o for c in net.connections.values() for o in c.spec.ops if o["op"] == "crop"]
    assert crops == [{"op": "crop", "axis": 1, "start": 0, "stop": 8}] * 2
    dw = next(c for c in net.connections.values() if c.spec.weight_op.get("groups") == 8)
    assert net.fan_out()[dw.spec.name].max() <= 9  # a depthwise neuron reaches at most 3x3 neurons of its channel
    art = api.compile(snn, "loihi2", tmp_path / "l2")
    graph = nir.read(str(tmp_path / "l2" / "model.nir"), type_check=False)
    assert sum("edgekit_crop_output" in n.metadata for n in graph.nodes.values()) == 2
    m = api.profile(art.path, samples=16).measured
    assert m["lava_agreement"] == 1.0 and m["identical_spike_counts"] == 1.0


def test_side_by_side_copies_stay_within_memory():
    """Lava's DelaySparse keeps a dense matrix of the whole side-by-side connection: delayed connections bound how many
    inputs run at once (1,120 keyword inputs of a spiking LMU took 12 GB before)."""
    from edgekit.runtimes.neuromorphic import MAX_DELAY_MATRIX_BYTES, copies_for

    desc = {"populations": [{"size": 10}, {"size": 32}],
            "connections": [{"delay": 1, "shape": [32, 10]}, {"delay": 3, "shape": [32, 10]}]}
    copies = copies_for(desc, 1120)
    assert 1 < copies < 1120
    assert 4 * 3 * (32 * copies) * (10 * copies) <= MAX_DELAY_MATRIX_BYTES
    desc["connections"].pop()
    assert copies_for(desc, 1120) == 1120
