"""Train the digits-lmu example (a Legendre Memory Unit reading 8x8 digits pixel by pixel) and write its weights.

    python examples/train_digits_lmu.py              # into edgekit/zoo/weights/digits-lmu.pt
    python examples/train_digits_lmu.py --validate   # tune: hold 20 % of the training split out, report on it

Uses the training loop of examples/train_digits.py (AdamW, cosine-decayed learning rate, gradient clipping, random
one-pixel shifts), deterministic on one CPU thread. Takes about a minute or two.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from edgekit.zoo import WEIGHTS_DIR
from train_digits import Recipe, train

NAME = "digits-lmu"
# Chosen with --validate (hidden 64, memory order 32, theta 64 = the whole sequence): ~99 % on the held-out fifth.
RECIPE = Recipe(epochs=40, batch_size=32, learning_rate=3e-3, weight_decay=0.0, clip_grad_norm=1.0,
                shift_augment=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR, help="where to write digits-lmu.pt")
    parser.add_argument("--validate", action="store_true",
                        help="train on 80 %% of the training split, report on the rest, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"training {NAME}", flush=True)
    model, acc = train(NAME, RECIPE, args.validate)
    parameters = sum(p.numel() for p in model.parameters())
    if args.validate:
        print(f"{NAME}: validation accuracy {acc:.4f} ({parameters} parameters)")
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / f"{NAME}.pt"
    torch.save({key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}, path)
    print(f"{NAME}: test accuracy {acc:.4f} ({parameters} parameters) -> {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
