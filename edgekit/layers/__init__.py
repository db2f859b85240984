"""edgekit's own recurrent layers: PyTorch modules written as explicit per-step functions with explicit state.

Where it sits: beside the model, before the flow. A user builds a network from these layers (or a converter swaps
them in: :func:`edgekit.converters.recurrent.to_egru`), and importing this package registers each layer with the rest
of edgekit — the torch.fx importer (one graph node per layer), the float graph executor, the MAC counter and the
estimators' recurrent cost family — so analysis, estimates and targets see them like ``nn.GRU``.

* :class:`LMU` — Legendre Memory Unit (Voelker, Kajić, Eliasmith, NeurIPS 2019), op ``"lmu"``
* :class:`EGRU` — event-based GRU (Subramoney et al., ICLR 2023), op ``"egru"``; :class:`EventTrace` — the low-pass
  output trace an EGRU classifier reads (the EGRU authors' readout), op ``"trace"``
* :class:`S4D` — diagonal state-space layer (S4D-Real, Gu et al. 2022), op ``"s4d"``; :class:`SelectiveSSM` — the
  selective scan of Mamba (Gu & Dao 2023), op ``"selective_ssm"`` (edgekit/layers/ssm.py)

Each layer has ``forward(x)`` over a whole sequence, shaped like ``torch.nn`` RNNs, and ``step(x_t, state)`` for one
time step — the function a streaming device runs (see :func:`edgekit.converters.recurrent.to_streaming`).
"""
from edgekit.layers.egru import EGRU, EventTrace
from edgekit.layers.lmu import LMU, legendre_delay_system, zoh_discretize
from edgekit.layers.ssm import S4D, SelectiveSSM

__all__ = ["LMU", "EGRU", "EventTrace", "S4D", "SelectiveSSM", "legendre_delay_system", "zoh_discretize"]
