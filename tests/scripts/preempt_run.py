"""A tiny PS-KD run (64 digits, batch 8 per process, 2 epochs) that signals itself (tests/test_preemption*.py).

    python preempt_run.py OUT_DIR [--signal SIGTERM] [--at STEP] [--ranks 0,1] [--again] [--resume]
                          [--allow world_size] [--tag NAME]

``--at N`` sends ``--signal`` at the end of step N to the processes of ``--ranks`` only (the others
must learn of it from the agreement); ``--again`` sends SIGTERM and SIGINT once more while the
checkpoint is being written.  Every process writes the dataset indices of each batch it trained on to
``OUT_DIR/seen-TAG-rankR.json`` (also when stopped), and the main process saves the student to
``OUT_DIR/run/student`` when the run completes.
"""
import argparse
import json
import os
import signal

import torch

import hfkd.training.trainer as trainer_module
from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.data import AugmentConfig
from hfkd.training.callbacks import TrainerCallback


class SignalAt(TrainerCallback):
    def __init__(self, step, signum, ranks):
        self.step, self.signum, self.ranks = step, signum, ranks

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step and trainer.accelerator.process_index in self.ranks:
            os.kill(os.getpid(), self.signum)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--signal", default="SIGTERM")
    parser.add_argument("--at", type=int, default=0)
    parser.add_argument("--ranks", default="0")
    parser.add_argument("--again", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--allow", default="")
    parser.add_argument("--tag", default="run")
    parser.add_argument("--save_steps", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--in_eval", action="store_true", help="send the signal inside the evaluation of step --at")
    opts = parser.parse_args()

    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(
        output_dir=os.path.join(opts.out_dir, "run"), num_train_epochs=opts.epochs, per_device_train_batch_size=8,
        learning_rate=0.01, optim="momentum", lr_scheduler_type="constant", save_strategy="steps",
        save_steps=opts.save_steps, eval_strategy="steps" if opts.in_eval else "no", eval_steps=opts.at or 1, disable_tqdm=True, eval_teachers=False, logging_steps=1,
        seed=0, resume_from_checkpoint="latest" if opts.resume else None,
        resume_allow_changes=[a for a in opts.allow.split(",") if a])
    trainer = DistillationTrainer(student, method="pskd", args=args, train_dataset=digits.train.select(range(64)),
                                  eval_dataset=digits.eval.select(range(24)) if opts.in_eval else None,
                                  augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5))
    if opts.in_eval:
        evaluate = trainer.task.evaluate

        def signalled_evaluate(*a, **kw):
            if trainer.state.global_step == opts.at:
                os.kill(os.getpid(), getattr(signal, opts.signal))
            return evaluate(*a, **kw)
        trainer.task.evaluate = signalled_evaluate
    elif opts.at:
        trainer.callbacks.add(
            SignalAt(opts.at, getattr(signal, opts.signal), [int(r) for r in opts.ranks.split(",")]))
    if opts.again:
        save = trainer_module.save_checkpoint

        def signalled_save(*a, **kw):  # a second and a third signal while the checkpoint is written
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            return save(*a, **kw)
        trainer_module.save_checkpoint = signalled_save

    seen = []
    prepare = trainer.method.prepare_batch

    def recording_prepare(batch):
        seen.append({"epoch": trainer.state.epoch, "index": batch["index"].tolist()})
        return prepare(batch)
    trainer.method.prepare_batch = recording_prepare
    rank = trainer.accelerator.process_index
    try:
        trainer.train()
    except SystemExit as stop:  # the preempted run's exit, as each process saw it
        with open(os.path.join(opts.out_dir, f"exit-{opts.tag}-rank{rank}.json"), "w") as f:
            json.dump({"code": stop.code, "step": trainer.state.global_step}, f)
        raise
    finally:
        with open(os.path.join(opts.out_dir, f"seen-{opts.tag}-rank{rank}.json"), "w") as f:
            json.dump(seen, f)
    assert bool(trainer.method.seen.all()), "the PS-KD bank misses images after two epochs"
    trainer.save_model()
    evaluations = [e["step"] for e in trainer.state.log_history if "eval_accuracy" in e]
    # One line from the main process only: two ranks printing at once interleave their lines ("DONE DONE10 10 2").
    if trainer.accelerator.is_main_process:
        print("DONE", trainer.state.global_step, trainer.accelerator.num_processes, "EVALS", evaluations, flush=True)


if __name__ == "__main__":
    main()
