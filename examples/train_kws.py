"""Train the spoken-keyword examples (kws-dscnn, -gru, -lmu, -ssm, -selective) on edgekit's synthesised keywords.

    python examples/train_kws.py                  # all of them, into edgekit/zoo/weights/
    python examples/train_kws.py kws-gru          # one of them
    python examples/train_kws.py --validate       # tune: report on the validation split (voices of their own)

The data set (edgekit/speech.py) is made on first use (about a minute) and cached. Training is deterministic on one
CPU thread: AdamW, cosine-decayed learning rate, gradient clipping, and random time shifts of up to 4 frames (80 ms)
with zero fill. Settings were chosen on the validation split; the test split (unseen voices) is only reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import train_digits
from edgekit.speech import kws
from edgekit.zoo import EXAMPLES
from train_digits import accuracy


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    clip_grad_norm: float
    max_shift_frames: int = 4
    seed: int = 0


RECIPES = {
    "kws-dscnn": Recipe(epochs=30, batch_size=64, learning_rate=3e-3, weight_decay=1e-4, clip_grad_norm=5.0),
    "kws-gru": Recipe(epochs=40, batch_size=64, learning_rate=5e-3, weight_decay=0.0, clip_grad_norm=1.0),
    "kws-lmu": Recipe(epochs=40, batch_size=64, learning_rate=3e-3, weight_decay=0.0, clip_grad_norm=1.0),
    "kws-selective": Recipe(epochs=30, batch_size=64, learning_rate=3e-3, weight_decay=0.0, clip_grad_norm=1.0),
    "kws-ssm": Recipe(epochs=40, batch_size=64, learning_rate=1e-2, weight_decay=0.0, clip_grad_norm=1.0),
}


def time_shift(x: torch.Tensor, max_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each clip's frames by -max..+max frames (zero fill); frames are axis -2 for [B, 49, 10] and
    [B, 1, 49, 10] alike."""
    if max_frames == 0:
        return x
    padded = nn.functional.pad(x, (0, 0, max_frames, max_frames))
    shifts = torch.randint(0, 2 * max_frames + 1, (len(x),), generator=generator)
    frames = x.shape[-2]
    return torch.stack([padded[i, ..., s:s + frames, :] for i, s in enumerate(shifts.tolist())])


def train(name: str, recipe: Recipe, validate: bool) -> tuple[nn.Module, float]:
    spec = EXAMPLES[name]
    image = spec.input_shape[0] == 1
    data = kws()
    x_train, y_train = data.x_train, data.y_train
    x_eval, y_eval = (data.x_val, data.y_val) if validate else (data.x_test, data.y_test)
    if image:
        x_train, x_eval = x_train[:, None], x_eval[:, None]
    torch.manual_seed(recipe.seed)
    model = spec.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * -(-len(x_train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    inputs, targets = torch.from_numpy(np.array(x_train)), torch.from_numpy(np.array(y_train))
    loss_fn = nn.CrossEntropyLoss()
    started = time.monotonic()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(inputs), generator=shuffle).split(recipe.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(time_shift(inputs[batch], recipe.max_shift_frames, shuffle)), targets[batch])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad_norm)
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        if epoch % 5 == 0 or epoch == recipe.epochs:
            print(f"  {name} epoch {epoch:3d}/{recipe.epochs}  loss {total / len(inputs):.4f}  "
                  f"{'val' if validate else 'test'} acc {accuracy(model, x_eval, y_eval):.4f}  "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    return model.eval(), accuracy(model, x_eval, y_eval)


def main(argv: list[str] | None = None) -> None:
    train_digits.main(argv, RECIPES, train, __doc__.splitlines()[0],
                      "report on the validation split (voices of their own), write nothing")


if __name__ == "__main__":
    main()
