"""A recurrent deployment graph seen as a step function: recurrent cells, the last-step selection, and a head.

Where it sits: between the deployment graph (edgekit/graph.py) and the targets that run a recurrent model one input
sample at a time (the Cortex-M step programs of targets/mcu/streaming.py, the integer reference of
edgekit/qrecurrent.py). A model over a sequence ``x`` [1, T, I] (batch first) becomes

    for t in 1..T:   state, h_t = cells(x_t, state)      one call per input sample; the state persists
                     y_t = head(h_t)                       e.g. the classifier on the newest hidden state

and the model's output is y_T. This holds when the graph is: the input -> recurrent layers (gru, lstm, lmu, egru),
each reading the previous one's per-step output (stacked) -> one selection of the last step of a layer's output
sequence (``outputs[:, -1]``, or ``h_n`` which the importers write as that selection) -> any head on that vector.
Anything else that reads a whole sequence (a flatten, a mean over time, a per-step head) mixes time steps and is
refused with an UnsupportedError naming the layer.
"""
from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import UnsupportedError
from edgekit.graph import Graph, Node

RECURRENT_OPS = ("gru", "lstm", "lmu", "egru", "s4d", "selective_ssm", "trace")
# State vectors each recurrent operator keeps between steps, in the order its step kernel writes them; the first is
# the per-step output the next layer and the head read.
STATE_KINDS = {"gru": ("h",), "lstm": ("h", "c"), "lmu": ("h", "m"), "egru": ("y", "c"), "s4d": ("h", "s"), "trace": ("h",),
               "selective_ssm": ("h", "s")}


def is_recurrent(graph: Graph) -> bool:
    return any(n.op in RECURRENT_OPS for n in graph.nodes)


def state_size(node: Node, kind: str) -> int:
    """Elements of one state vector (per sequence)."""
    if kind == "s":  # a state-space layer: N states per channel
        return int(node.attrs["hidden_size"]) * int(node.attrs["state_size"])
    return int(node.attrs["memory_size"]) if (node.op, kind) == ("lmu", "m") else int(node.attrs["hidden_size"])


@dataclass
class StepGraph:
    """``cells`` run in order each step (``cells[0]`` reads the input sample, ``cells[k]`` the output of
    ``cells[k-1]``); ``select`` picks the last step of one cell's output; ``head`` is the rest of the graph with an
    input node named like ``select`` ([1, hidden]). ``steps`` = T, ``time_axis`` = 1 (batch first) or 0."""

    graph: Graph
    input: Node
    cells: list[Node]
    select: Node
    head: Graph
    time_axis: int
    steps: int

    @property
    def input_features(self) -> int:
        return int(self.input.shape[-1])

    @property
    def output(self) -> str:
        return self.graph.outputs[0]


def _is_last_step(sel: Node, src: Node, time_axis: int, steps: int) -> bool:
    index = sel.attrs.get("index", [])
    full = ["slice", None, None, None]
    for axis, item in enumerate(index):
        if axis == time_axis:
            if not (isinstance(item, int) and item in (-1, steps - 1)):
                return False
        elif isinstance(item, list):
            whole = item[1] in (None, 0) and item[2] in (None, src.shape[axis]) and item[3] in (None, 1)
            if item != full and not whole:
                return False
        elif not (isinstance(item, int) and src.shape[axis] == 1 and item in (0, -1)):
            return False
    return len(index) > time_axis


def split(graph: Graph, target: str) -> StepGraph:
    """The step structure of a recurrent deployment ``graph``, or UnsupportedError saying which layer breaks it."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedError(f"model '{graph.name}' has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
                               f"a recurrent model on {target} reads one sequence and gives one output")
    inp = graph.inputs[0]
    rec = [n for n in graph.nodes if n.op in RECURRENT_OPS]
    time_axis = 1
    for n in rec:
        if not n.attrs.get("batch_first", False):
            raise UnsupportedError(f"layer '{n.name}' ({n.op}) has batch_first=False; a step program on {target} reads "
                                   "sequences batch first ([1, T, features]): build the layer with batch_first=True")
    if len(inp.shape) != 3 or inp.shape[0] != 1:
        raise UnsupportedError(f"layer '{rec[0].name}' ({rec[0].op}) reads an input of shape {tuple(inp.shape)}; a "
                               f"step program on {target} needs one sequence [1, T, features] going straight into "
                               "the first recurrent layer")
    steps = int(inp.shape[time_axis])
    sequences = {inp.name}
    cells: list[Node] = []
    for n in rec:
        src = n.inputs[0]
        expected = inp.name if not cells else cells[-1].name
        if src != expected:
            reader = "the model input" if not cells else f"the output of '{cells[-1].name}'"
            raise UnsupportedError(f"layer '{n.name}' ({n.op}) reads '{src}', not {reader}; on {target} recurrent "
                                   "layers must read the input sequence directly or be stacked one on the next")
        cells.append(n)
        sequences.add(n.name)
    selects = []
    for n in graph.nodes:
        if n.op in RECURRENT_OPS or n.op == "input":
            continue
        seq_inputs = [i for i in n.inputs if i in sequences]
        if not seq_inputs:
            continue
        src = graph[seq_inputs[0]]
        if n.op == "select" and src.op in RECURRENT_OPS and _is_last_step(n, src, time_axis, steps):
            selects.append(n)
            continue
        raise UnsupportedError(
            f"layer '{n.name}' ({n.op}) reads the whole sequence '{src.name}', which mixes time steps; on {target} a "
            f"recurrent model runs one step per input sample, so only the next recurrent layer or the last step "
            f"(outputs[:, -1], h_n) of a recurrent layer may be read")
    if graph.outputs[0] in sequences:
        raise UnsupportedError(f"model '{graph.name}' outputs the whole sequence of '{graph.outputs[0]}'; on {target} "
                               "a recurrent model gives one output per sequence: read its last step (outputs[:, -1])")
    if len(selects) != 1:
        names = ", ".join(f"'{s.name}'" for s in selects)
        raise UnsupportedError(f"model '{graph.name}' reads the last step of recurrent layers {len(selects)} times "
                               f"({names}); on {target} the head reads one recurrent layer's last step")
    select = selects[0]
    # The head: everything downstream of the selection. Nothing in it may read the input or a sequence.
    head_nodes: list[Node] = [Node(select.name, "input", [], select.shape)]
    known = {select.name}
    for n in graph.nodes:
        if n.name in known or n.op == "input" or n.name in sequences or n is select:
            continue
        missing = [i for i in n.inputs if i not in known]
        if missing:
            raise UnsupportedError(f"layer '{n.name}' ({n.op}) reads '{missing[0]}' besides the last recurrent "
                                   f"step; on {target} the head after a recurrent layer may only read that step")
        head_nodes.append(n.copy())
        known.add(n.name)
    head = Graph(head_nodes, list(graph.outputs), f"{graph.name}.head")
    return StepGraph(graph, inp, cells, select, head, time_axis, steps)
