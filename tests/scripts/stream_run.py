"""A short KD run from a stream of local Parquet shards (tests/test_streaming.py).

    python stream_run.py SHARDS OUT_DIR [--at STEP] [--resume] [--max_steps N] [--tag NAME] [--save_steps N]
                         [--allow world_size] [--eval N]

``--at N`` sends SIGTERM to this process at the end of step N (a preemption: checkpoint, then exit 143).
Every process writes the sample indices (key ids) of each batch it trained on, with the epoch, to
``OUT_DIR/seen-TAG-rankR.json``; the main process saves the student to ``OUT_DIR/run/student`` at the end.
"""
import argparse
import json
import os
import signal

import torch

from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.data import AugmentConfig
from hfkd.data.stream import load_stream
from hfkd.training.callbacks import TrainerCallback


class SignalAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer):
        if trainer.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("shards")
    parser.add_argument("out_dir")
    parser.add_argument("--at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--max_steps", type=int, default=12)
    parser.add_argument("--save_steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--buffer", type=int, default=16)
    parser.add_argument("--tag", default="run")
    parser.add_argument("--eval", type=int, default=0, help="evaluate at the end on N digits, streamed")
    parser.add_argument("--allow", default="", help="resume_allow_changes, comma-separated")
    opts = parser.parse_args()

    splits, _ = load_stream(opts.shards)
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    teacher = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    args = DistillationArguments(
        output_dir=os.path.join(opts.out_dir, "run"), max_steps=opts.max_steps, per_device_train_batch_size=opts.batch,
        learning_rate=0.01, optim="momentum", lr_scheduler_type="cosine", save_strategy="steps",
        save_steps=opts.save_steps, eval_strategy="no", disable_tqdm=True, eval_teachers=False, logging_steps=1,
        seed=0, resume_from_checkpoint="latest" if opts.resume else None, stream_shuffle_buffer=opts.buffer,
        resume_allow_changes=[a for a in opts.allow.split(",") if a])
    evaluation = None
    if opts.eval:  # a streamed eval split of 2 shards: read once on the main process, shared by Accelerate
        evaluation = load_image_dataset().eval.select(range(opts.eval)).to_iterable_dataset(num_shards=2)
    trainer = DistillationTrainer(student, teachers=[teacher], method="kd", args=args, train_dataset=splits["train"],
                                  eval_dataset=evaluation, augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5))
    if opts.at:
        trainer.callbacks.add(SignalAt(opts.at))
    seen = []
    prepare = trainer.method.prepare_batch

    def recording_prepare(batch):
        seen.append({"epoch": trainer.state.epoch, "index": [str(i) for i in batch["index"].tolist()]})
        return prepare(batch)
    trainer.method.prepare_batch = recording_prepare
    rank = trainer.accelerator.process_index
    try:
        trainer.train()
    finally:
        with open(os.path.join(opts.out_dir, f"seen-{opts.tag}-rank{rank}.json"), "w") as f:
            json.dump(seen, f)
    trainer.save_model()
    if opts.eval:
        print("EVAL", json.dumps(trainer.evaluate()), flush=True)
    print("DONE", trainer.state.global_step, trainer.accelerator.num_processes, flush=True)


if __name__ == "__main__":
    main()
