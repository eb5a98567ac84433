"""Time from a preemption signal to its checkpoint being written, against an ordinary checkpoint's write time.

    python benchmarks/preemption_latency.py                      # test_resnet at 32 px, 5 rounds
    python benchmarks/preemption_latency.py --model resnet18 --image_size 224 --rounds 5

Each round is one short run in this process (PS-KD, no teacher, batch 16): an ordinary checkpoint at step 2
gives the ordinary write time (the trainer's checkpoint write); then a timer thread sends SIGTERM at a random
moment of a later step and the run writes its checkpoint at the next step boundary and raises ``Preempted``.
Signal-to-checkpoint is measured from just before ``os.kill`` to the end of that checkpoint's write, so it is
the rest of the step that was running, the agreement and the write; agreement-to-checkpoint starts when the
processes agreed to stop (the step boundary).  Reported: medians over the rounds and their ratios to the
ordinary write.  ``--threads`` (default 1) keeps step times steady on a shared machine.
"""
import argparse
import os
import random
import signal
import statistics
import tempfile
import threading
import time

import torch

import hfkd.training.trainer as trainer_module
from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.preemption import Preempted, Preemption
from hfkd.training.callbacks import TrainerCallback


class _Clock(TrainerCallback):
    def __init__(self, delay):
        self.delay, self.sent, self.timer = delay, None, None

    def on_step_end(self, trainer):
        if trainer.state.global_step == 2:
            trainer._save()  # an ordinary checkpoint, what save_steps would write
        if trainer.state.global_step == 3 and self.timer is None:
            def send():
                self.sent = time.perf_counter()
                os.kill(os.getpid(), signal.SIGTERM)
            self.timer = threading.Timer(self.delay, send)
            self.timer.start()


def one_round(train, model, image_size, delay, out_dir):
    torch.manual_seed(0)
    student = create_backbone(model, num_classes=10, pretrained=False, image_size=image_size)
    args = DistillationArguments(output_dir=out_dir, max_steps=1000, per_device_train_batch_size=16,
                                 save_strategy="no", save_total_limit=None, eval_strategy="no",
                                 disable_tqdm=True, eval_teachers=False, logging_steps=1000)
    trainer = DistillationTrainer(student, method="pskd", args=args, train_dataset=train)
    clock = _Clock(delay)
    trainer.callbacks.add(clock)
    saves, agreed = [], []
    save = trainer_module.save_checkpoint
    requested = Preemption.requested

    def timed_requested(self):
        answer = requested(self)
        if answer and not agreed:
            agreed.append(time.perf_counter())
        return answer
    Preemption.requested = timed_requested

    def timed_save(*a, **kw):
        start = time.perf_counter()
        path = save(*a, **kw)
        saves.append((start, time.perf_counter()))
        return path
    trainer_module.save_checkpoint = timed_save
    try:
        trainer.train()
    except Preempted:
        pass
    finally:
        trainer_module.save_checkpoint = save
        Preemption.requested = requested
    trainer.output_lock.release()
    ordinary = saves[0][1] - saves[0][0]
    return ordinary, saves[-1][1] - clock.sent, saves[-1][1] - agreed[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max_delay", type=float, default=0.05, help="the signal comes 0..max_delay s into step 4")
    p.add_argument("--threads", type=int, default=1)
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    train = load_image_dataset().train.select(range(256))
    rng = random.Random(0)
    ordinary, latency, boundary = [], [], []
    for r in range(opts.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            o, s, b = one_round(train, opts.model, opts.image_size, rng.uniform(0, opts.max_delay),
                                os.path.join(tmp, "run"))
        ordinary.append(o)
        latency.append(s)
        boundary.append(b)
        print(f"round {r}: ordinary checkpoint {o * 1000:.1f} ms, signal to checkpoint {s * 1000:.1f} ms, "
              f"agreement to checkpoint {b * 1000:.1f} ms", flush=True)
    mo, ms, mb = statistics.median(ordinary), statistics.median(latency), statistics.median(boundary)
    print(f"median ordinary checkpoint write: {mo * 1000:.1f} ms")
    print(f"median signal to checkpoint written: {ms * 1000:.1f} ms (ratio {ms / mo:.2f})")
    print(f"median agreement to checkpoint written: {mb * 1000:.1f} ms (ratio {mb / mo:.2f})")


if __name__ == "__main__":
    main()
