"""A tiny KD run that SIGKILLs itself at a chosen moment (test_reliability_kill.py).

    python kill_resume.py OUT_DIR KILL_POINT RESUME

KILL_POINT: ``none``; ``step:N`` (after the backward of step N, before its update);
``checkpoint_state:N`` (Accelerate's files of checkpoint N written, hfkd's not yet);
``checkpoint_manifest:N`` (every file written, the manifest not yet); ``save_write`` (the final
student half-written); ``save_swap`` (the final student complete, not yet under its name).
RESUME: ``latest`` resumes from the newest intact checkpoint when there is one.
The kill is deterministic: each point wraps the function that runs at that moment.
"""
import os
import signal
import sys

import torch

import hfkd
import hfkd.hub.save as save_module
import hfkd.training.checkpoint as checkpoint_module
from hfkd import DistillationArguments, DistillationTrainer, create_backbone, load_image_dataset
from hfkd.data import AugmentConfig


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def main(out_dir, kill_point, resume):
    digits = load_image_dataset()
    torch.manual_seed(0)
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    torch.manual_seed(100)
    teacher = create_backbone("test_convnext", num_classes=10, pretrained=False, image_size=32)
    run_dir = os.path.join(out_dir, "run")
    has_checkpoint = bool(checkpoint_module.list_checkpoints(run_dir))
    args = DistillationArguments(
        output_dir=run_dir, max_steps=8, per_device_train_batch_size=16, learning_rate=3e-3, save_strategy="steps",
        save_steps=2, save_total_limit=2, eval_strategy="no", disable_tqdm=True, eval_teachers=False, logging_steps=1,
        resume_from_checkpoint="latest" if resume == "latest" and has_checkpoint else None, use_cpu=True)
    trainer = DistillationTrainer(student, [teacher], method=hfkd.create_method("kd"), args=args,
                                  train_dataset=digits.train.select(range(64)),
                                  augment=AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=0.3))
    kind, _, at = kill_point.partition(":")
    if kind == "step":
        backward = trainer.accelerator.backward

        def backward_then_die(loss, **kw):
            backward(loss, **kw)
            if trainer.state.global_step + 1 == int(at):
                die()
        trainer.accelerator.backward = backward_then_die
    elif kind == "checkpoint_state":
        save_state = trainer.accelerator.save_state

        def save_state_then_die(path, **kw):
            save_state(path, **kw)
            if path.endswith(f"checkpoint-{at}"):
                die()
        trainer.accelerator.save_state = save_state_then_die
    elif kind == "checkpoint_manifest":
        manifest = checkpoint_module.file_manifest

        def die_before_manifest(folder, **kw):
            if folder.endswith(f"checkpoint-{at}"):
                die()
            return manifest(folder, **kw)
        checkpoint_module.file_manifest = die_before_manifest
    elif kind == "save_write":
        write = save_module._save_timm

        def write_then_die(student, out, metadata):
            write(student, out, metadata)
            die()
        save_module._save_timm = write_then_die
    elif kind == "save_swap":
        save_module.replace_folder = lambda *a, **kw: die()
    trainer.train()
    trainer.save_model(os.path.join(out_dir, "student"))
    print("DONE", trainer.state.global_step)


if __name__ == "__main__":
    main(*sys.argv[1:4])
