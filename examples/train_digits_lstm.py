"""Train a small LSTM on the digits, read pixel by pixel (64 steps), for the recurrent benchmark (bench/recurrent.py).

    python examples/train_digits_lstm.py                      # into build/bench/digits-lstm.pt
    python examples/train_digits_lstm.py --validate           # tune: hold 20 % of the training split out

The same task and training loop as the zoo's digits-gru (examples/train_digits.py: AdamW, cosine-decayed learning
rate, gradient clipping, random one-pixel shifts), with an ``nn.LSTM`` of 64 units. Not a bundled example: the
benchmark trains it once (deterministic on one CPU thread, a few minutes) and keeps the weights under build/.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.zoo import digits_data, digits_train_data
from train_digits import Recipe, accuracy, random_shift

NAME = "digits-lstm"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "bench" / f"{NAME}.pt"
# digits-gru's recipe (examples/train_digits.py) for 100 epochs; --validate: 97.2 % on the held-out fifth.
RECIPE = Recipe(epochs=100, batch_size=32, learning_rate=1e-2, weight_decay=0.0, clip_grad_norm=1.0,
                shift_augment=True)


class DigitsLSTM(nn.Module):
    """Single-layer LSTM (hidden 64) reading a digit one pixel per step, classifying from the last step's hidden
    state. Input [N, 64, 1] in [0, 1]; output [N, 10] logits."""

    def __init__(self, hidden_size: int = 64, num_classes: int = 10):
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden_size, batch_first=True)
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(x)
        return self.classifier(outputs[:, -1])


def train(recipe: Recipe = RECIPE, validate: bool = False, log=print) -> tuple[nn.Module, float]:
    """Train DigitsLSTM; returns the model and its accuracy on the test split (or the held-out fifth)."""
    x_train, y_train = digits_train_data(sequence=True)
    if validate:
        order = np.random.default_rng(recipe.seed).permutation(len(x_train))
        held_out, kept = order[: len(order) // 5], order[len(order) // 5:]
        x_eval, y_eval, x_train, y_train = x_train[held_out], y_train[held_out], x_train[kept], y_train[kept]
    else:
        _, x_eval, y_eval = digits_data(sequence=True)
    torch.manual_seed(recipe.seed)
    model = DigitsLSTM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(x_train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    inputs, targets = torch.from_numpy(np.array(x_train)), torch.from_numpy(np.array(y_train))
    loss_fn = nn.CrossEntropyLoss()
    started = time.monotonic()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        for batch in torch.randperm(len(inputs), generator=shuffle).split(recipe.batch_size):
            optimizer.zero_grad()
            batch_inputs = random_shift(inputs[batch], shuffle) if recipe.shift_augment else inputs[batch]
            loss = loss_fn(model(batch_inputs), targets[batch])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
            optimizer.step()
            schedule.step()
        if epoch % 10 == 0 or epoch == recipe.epochs:
            log(f"  {NAME} epoch {epoch:3d}/{recipe.epochs}  {'val' if validate else 'test'} acc "
                f"{accuracy(model, x_eval, y_eval):.4f}  ({time.monotonic() - started:.0f} s)")
    return model.eval(), accuracy(model, x_eval, y_eval)


def load_or_train(path: Path = DEFAULT_OUT, log=print) -> nn.Module:
    """The trained DigitsLSTM from ``path``, training (and saving) it first if the file is missing."""
    model = DigitsLSTM()
    if not path.is_file():
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        log(f"training {NAME} (once; weights kept in {path})")
        trained, acc = train(log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone().contiguous() for k, v in trained.state_dict().items()}, path)
        log(f"{NAME}: test accuracy {acc:.4f} -> {path}")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the weights")
    parser.add_argument("--validate", action="store_true",
                        help="train on 80 %% of the training split, report on the rest, write nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, acc = train(validate=args.validate)
    if args.validate:
        print(f"{NAME}: validation accuracy {acc:.4f}")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"{NAME}: test accuracy {acc:.4f} -> {args.out}")


if __name__ == "__main__":
    main()
