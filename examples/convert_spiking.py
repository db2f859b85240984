"""Convert the bundled examples to spiking networks once, with to_spiking's defaults, and ship the result next to
their weights (edgekit/zoo/weights/<example>.<kind>.json/.npz), so that `edgekit compile <example> -t loihi2
--spiking <kind>` takes seconds instead of the 10-20 minutes of fine-tuning on 2 cores.

    .venv/bin/python examples/convert_spiking.py          # all: digits-cnn, kws-dscnn rate; digits-lmu, kws-lmu LMUs
    .venv/bin/python examples/convert_spiking.py digits-lmu:lmuformer

On 2 busy cores: digits-lmu lmuformer 32 min, l2mu 26 min; kws-dscnn rate 30 min.

A shipped conversion is used only for the unchanged example (its weights' digest is stored) and default settings.
"""
from __future__ import annotations

import sys
import time

from edgekit.converters.spiking import save_shipped, to_spiking
from edgekit.model import Model

CASES = ["digits-cnn:rate", "digits-lmu:lmuformer", "digits-lmu:l2mu", "kws-dscnn:rate", "kws-lmu:lmuformer",
         "kws-lmu:l2mu"]


def main(argv: list[str]) -> int:
    for case in argv or CASES:
        example, kind = case.split(":")
        ann = Model.load(example)
        t = time.time()
        snn = to_spiking(ann, kind=kind, dataset=None)
        paths = save_shipped(ann, snn)
        acc = snn.meta["spiking"].get("accuracy")
        print(f"{example} {kind}: {time.time() - t:.0f} s, spiking accuracy {acc}, wrote "
              + ", ".join(str(p) for p in paths), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
