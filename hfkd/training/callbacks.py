"""Trainer callbacks: hooks that see the trainer at fixed points of the loop."""
from __future__ import annotations

from typing import Any, Dict, List


class TrainerCallback:
    """Override what you need; set ``trainer.state.should_stop = True`` to stop early."""

    def on_train_begin(self, trainer) -> None: ...
    def on_epoch_begin(self, trainer, epoch: int) -> None: ...
    def on_step_end(self, trainer) -> None: ...
    def on_log(self, trainer, logs: Dict[str, Any]) -> None: ...
    def on_evaluate(self, trainer, metrics: Dict[str, Any]) -> None: ...
    def on_save(self, trainer, checkpoint_dir: str) -> None: ...
    def on_epoch_end(self, trainer, epoch: int) -> None: ...
    def on_train_end(self, trainer) -> None: ...


class CallbackHandler:
    def __init__(self, callbacks: List[TrainerCallback]):
        self.callbacks = list(callbacks)

    def add(self, callback: TrainerCallback) -> None:
        self.callbacks.append(callback)

    def __call__(self, event: str, trainer, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(trainer, *args)


class ProgressCallback(TrainerCallback):
    """A tqdm bar over optimiser steps, on the main process only."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, trainer):
        from tqdm.auto import tqdm

        disable = trainer.args.disable_tqdm or not trainer.accelerator.is_main_process
        self.bar = tqdm(total=trainer.state.max_steps, initial=trainer.state.global_step, disable=disable,
                        desc=f"{trainer.method.name}", dynamic_ncols=True)

    def on_step_end(self, trainer):
        if self.bar is not None:
            self.bar.update(trainer.state.global_step - self.bar.n)

    def on_log(self, trainer, logs):
        if self.bar is not None and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}")

    def on_evaluate(self, trainer, metrics):
        if self.bar is not None and not self.bar.disable:
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            self.bar.write(f"[step {trainer.state.global_step}] {shown}")

    def on_train_end(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
