"""The short training loop that converters share (gradual pruning, quantization-aware training).

Where it sits: inside converters. A converter that changes weights (prune, qat) fine-tunes the network afterwards or
while it changes it. This loop is deliberately plain: cross-entropy on (x, y), Adam with a cosine-decayed learning rate,
shuffled mini-batches, gradient-norm clipping, and a callback after every optimizer step (where pruning updates its
masks). It shows a progress bar when stderr is a terminal.

Training data comes from, in this order: what the caller passes (``dataset=(x, y)``), else the model's own
``train_x``/``train_y`` (the bundled examples carry them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgekit.errors import DataError, ShapeError
from edgekit.model import Model

# Below this many parameters one thread trains faster than several (thread hand-offs cost more than tiny kernels).
SMALL_MODEL_PARAMS = 1_000_000


@dataclass(frozen=True)
class TrainSettings:
    """How long and how hard to fine-tune. ``clip_grad_norm`` keeps recurrent layers stable."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    clip_grad_norm: float = 1.0
    seed: int = 0

    def steps(self, samples: int) -> int:
        """Optimizer steps this many epochs take over ``samples`` training samples."""
        return self.epochs * (-(-samples // self.batch_size))


def training_data(model: Model, dataset=None) -> tuple[np.ndarray, np.ndarray] | None:
    """(x, y) to fine-tune ``model`` on: ``dataset`` if given, else the model's own training split, else None."""
    if dataset is None:
        if model.train_x is None or model.train_y is None:
            return None
        x, y = model.train_x, model.train_y
    else:
        try:
            x, y = dataset
        except (TypeError, ValueError):
            raise DataError("dataset must be a pair (x, y) of inputs and integer class labels") from None
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    model.check_input(x, "training")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ShapeError(f"training labels must be integer class indices, one per input ({len(x)}); "
                         f"got {y.dtype} {y.shape}")
    return x, y.astype(np.int64)


def fine_tune(module: nn.Module, x: np.ndarray, y: np.ndarray, settings: TrainSettings,
              step_callback: Callable[[], None] | None = None, description: str = "fine-tuning",
              progress: bool | None = None,
              loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> list[float]:
    """Train ``module`` in place (cross-entropy, Adam) and leave it in eval mode; returns the mean loss per epoch.

    ``step_callback()`` runs after every optimizer step. ``progress`` None shows a bar only on a terminal.
    ``loss(outputs, labels, batch_indices)`` replaces cross-entropy (e.g. to distill from a teacher's outputs).
    """
    inputs, targets = torch.from_numpy(np.array(x, np.float32)), torch.from_numpy(np.array(y, np.int64))
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, settings.steps(len(inputs))))
    shuffle = torch.Generator().manual_seed(settings.seed)
    loss_fn = nn.CrossEntropyLoss()
    losses: list[float] = []
    bar, task = _progress_bar(progress, description, settings.steps(len(inputs)))
    threads = torch.get_num_threads()
    if sum(p.numel() for p in module.parameters()) < SMALL_MODEL_PARAMS:
        torch.set_num_threads(1)
    try:
        for _ in range(settings.epochs):
            module.train()
            total = 0.0
            for batch in torch.randperm(len(inputs), generator=shuffle).split(settings.batch_size):
                optimizer.zero_grad()
                out = module(inputs[batch])
                out = out[0] if isinstance(out, (tuple, list)) else out
                value = loss(out, targets[batch], batch) if loss is not None else loss_fn(out, targets[batch])
                value.backward()
                if settings.clip_grad_norm:
                    nn.utils.clip_grad_norm_(module.parameters(), settings.clip_grad_norm)
                optimizer.step()
                schedule.step()
                total += value.item() * len(batch)
                if step_callback is not None:
                    step_callback()
                if bar is not None:
                    bar.update(task, advance=1, description=f"{description} (loss {value.item():.3f})")
            losses.append(total / len(inputs))
    finally:
        if bar is not None:
            bar.stop()
        torch.set_num_threads(threads)
        module.eval()
    return losses


def _progress_bar(progress: bool | None, description: str, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if progress is False or (progress is None and not console.is_terminal):
        return None, None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, transient=True)
    task = bar.add_task(description, total=total)
    bar.start()
    return bar, task
