"""Make the digits-egru example: the trained digits-gru turned into an event-based GRU by ``to_egru``, and its weights.

    python examples/train_digits_egru.py              # into edgekit/zoo/weights/digits-egru.pt
    python examples/train_digits_egru.py --validate   # tune: hold 20 % of the training split out, report on it

The GRU's weights are copied into an EGRU (Subramoney et al., ICLR 2023) whose units only send their state when it
crosses a threshold; fine-tuning blends the layer from the GRU into the EGRU over the first 30 of 80 epochs (copying
alone drops every negative GRU state and leaves chance accuracy) while an activity regulariser pushes the event rate
down. Deterministic on one CPU thread; takes about 4-5 minutes (11 on a busy machine). Needs
edgekit/zoo/weights/digits-gru.pt (``python examples/train_digits.py digits-gru``).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from edgekit import Model
from edgekit.converters.recurrent import to_egru
from edgekit.zoo import WEIGHTS_DIR
from train_digits import random_shift

NAME = "digits-egru"
SEED = 0
# The setting that keeps the GRU's accuracy: 98.06 % on the test split (the GRU's too) at 60.9 % activity sparsity;
# --validate gives 95.8 % at 57.7 % (that held-out fifth was GRU training data, so it has no GRU baseline). Stronger
# activity weights and higher thresholds trade accuracy for sparsity (test split: activity_weight 6 -> 94.4 % at 66 %;
# thresholds 0.5, activity_weight 5, 40 epochs -> 75.8 % at 81 %).
SETTINGS = dict(thresholds=0.1, fine_tune_epochs=80, blend_epochs=30, learning_rate=1e-2, batch_size=64,
                activity_weight=3.0, pseudo_derivative_width=0.5, dampening=0.3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR, help="where to write digits-egru.pt")
    parser.add_argument("--validate", action="store_true",
                        help="fine-tune on 80 %% of the training split, report on the rest, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    gru = Model.load("digits-gru")
    if args.validate:
        order = np.random.default_rng(SEED).permutation(len(gru.train_x))
        held_out, kept = order[: len(order) // 5], order[len(order) // 5:]
        gru = dataclasses.replace(gru, train_x=gru.train_x[kept], train_y=gru.train_y[kept],
                                  test_x=gru.train_x[held_out], test_y=gru.train_y[held_out])
    egru = to_egru(gru, augment=random_shift, seed=SEED, log=lambda line: print(line, flush=True), **SETTINGS)
    info = egru.meta["egru"]
    split = "validation" if args.validate else "test"
    summary = (f"{NAME}: {split} accuracy {info['accuracy']:.4f} (GRU {info['source_accuracy']:.4f}), activity "
               f"sparsity {info['activity_sparsity']:.4f}, mean threshold {info['mean_threshold']:.3f}")
    if args.validate:
        print(summary)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{NAME}.pt"
    torch.save({key: value.detach().clone().contiguous() for key, value in egru.module.state_dict().items()}, path)
    print(f"{summary} -> {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
