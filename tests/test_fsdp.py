"""FSDP (issue 23): a launch that asks for FSDP and gets something else from Accelerate is refused up front.

Accelerate shards only on GPUs; on CPU processes `accelerate launch --use_fsdp` silently prepares DDP.
"""
import math
import os
import subprocess
import sys

import pytest
import torch
from accelerate.utils import DistributedType

from hfkd import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Acc:
    def __init__(self, distributed_type, processes=2):
        self.distributed_type, self.num_processes = distributed_type, processes


@pytest.mark.parametrize("chosen", [DistributedType.MULTI_CPU, DistributedType.NO, DistributedType.MULTI_GPU])
def test_fsdp_asked_but_not_run_is_refused(monkeypatch, chosen):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match=f"Accelerate runs {chosen.value} on 2 process.*drop --use_fsdp"):
        launch.check_fsdp(_Acc(chosen))


def test_fsdp_run_or_not_asked_passes(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    launch.check_fsdp(_Acc(DistributedType.FSDP))
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    launch.check_fsdp(_Acc(DistributedType.MULTI_CPU))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    launch.check_fsdp(_Acc(DistributedType.MULTI_CPU))


@pytest.mark.slow
def test_accelerate_launch_use_fsdp_on_cpu_is_refused_before_training(tmp_path):
    """The real launcher: 2 CPU processes with --use_fsdp --fsdp_version 2 (Accelerate would prepare DDP)."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               GLOO_SOCKET_IFNAME="lo", HFKD_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(ROOT, "tests", "scripts", "fsdp_asked.py")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--use_fsdp", "--fsdp_version", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "0", script, str(tmp_path / "run")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert "PREPARED" not in proc.stdout, proc.stdout  # before the fix: "PREPARED MULTI_CPU DistributedDataParallel"
    assert proc.returncode != 0
    assert "Accelerate runs MULTI_CPU on 2 process(es)" in proc.stderr, proc.stderr[-4000:]


# -- sharded training (hfkd/training/fsdp.py) ----------------------------------------------------------------
def _fsdp_run(plugin=None, **plugin_settings):
    """An Accelerator as an FSDP launch makes it: distributed type FSDP and Accelerate's plugin, set as given."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = plugin or FullyShardedDataParallelPlugin(fsdp_version=2)
    for name, value in plugin_settings.items():
        setattr(plugin, name, value)
    return SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2,
                           state=SimpleNamespace(fsdp_plugin=plugin))


def _args(tmp_path, **overrides):
    from hfkd import DistillationArguments

    return DistillationArguments(output_dir=str(tmp_path), **overrides)


def test_a_sharded_run_lists_everything_fsdp_cannot_do_at_once(tmp_path):
    from hfkd.training import fsdp

    accelerator = _fsdp_run(fsdp_version=1, activation_checkpointing=True, cpu_ram_efficient_loading=True)
    with pytest.raises(ValueError) as refused:
        fsdp.check_fsdp_run(accelerator, _args(tmp_path, model_ema=True, torch_compile=True))
    message = str(refused.value)
    for reason in ("--fsdp_version 2", "model_ema keeps a full copy", "torch_compile",
                   "fsdp_activation_checkpointing false", "fsdp_cpu_ram_efficient_loading false"):
        assert reason in message, message
    fsdp.check_fsdp_run(_fsdp_run(), _args(tmp_path))  # FSDP2 with its defaults trains


def test_shard_teachers_needs_an_fsdp_launch(tmp_path):
    from hfkd.training import fsdp

    with pytest.raises(ValueError, match="shard_teachers .* needs an FSDP launch"):
        fsdp.check_fsdp_run(_Acc(DistributedType.MULTI_CPU), _args(tmp_path, shard_teachers=True))
    fsdp.check_fsdp_run(_Acc(DistributedType.MULTI_CPU), _args(tmp_path))
    fsdp.check_fsdp_run(_fsdp_run(), _args(tmp_path, shard_teachers=True))


def test_the_command_line_checks_name_what_fsdp_cannot_do_before_a_run(monkeypatch, tmp_path):
    """cli/preflight.py lists these with its other problems; no Accelerator exists yet, only the launcher's settings."""
    from hfkd.training import fsdp

    for name in ("ACCELERATE_USE_FSDP", "FSDP_VERSION", "FSDP_CPU_RAM_EFFICIENT_LOADING", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert fsdp.launch_problems(_args(tmp_path)) == []
    assert "needs an FSDP launch" in " ".join(fsdp.launch_problems(_args(tmp_path, shard_teachers=True)))
    # what `accelerate launch --use_fsdp --fsdp_version 2` exports, on this CPU machine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")
    problems = fsdp.launch_problems(_args(tmp_path, model_ema=True))
    assert len(problems) == 3, problems
    assert "Accelerate runs MULTI_CPU" in problems[0] and "only on GPUs" in problems[0]
    assert "model_ema" in problems[1] and "--fsdp_cpu_ram_efficient_loading false" in problems[2]


def test_checkpoints_of_a_sharded_run_are_sharded(tmp_path):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    from hfkd.training import fsdp

    # as `accelerate launch --fsdp_state_dict_type FULL_STATE_DICT` makes it
    accelerator = _fsdp_run(FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type="FULL_STATE_DICT"))
    fsdp.check_fsdp_run(accelerator, _args(tmp_path))
    plugin = accelerator.state.fsdp_plugin
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    # with the sharded configs, not the full ones' (rank 0 only, which would make a load broadcast from rank 0)
    assert type(plugin.state_dict_config).__name__ == "ShardedStateDictConfig"
    assert type(plugin.optim_state_dict_config).__name__ == "ShardedOptimStateDictConfig"


def test_the_student_blocks_become_units_innermost_first():
    from transformers import ViTConfig, ViTForImageClassification

    from hfkd import create_backbone
    from hfkd.training import fsdp

    vit = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32)
    blocks = fsdp.student_blocks(vit)
    assert {id(b) for b in blocks} == {id(b) for b in vit.model.blocks} and len(blocks) == len(vit.model.blocks) > 1
    resnet = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32)
    residual = [b for layer in (resnet.model.layer1, resnet.model.layer2, resnet.model.layer3, resnet.model.layer4)
                for b in layer]
    chosen = fsdp.student_blocks(resnet)
    assert {id(b) for b in chosen} == {id(b) for b in residual}  # not the stem's or the shortcuts' layers
    # a parent after its children: FSDP2 shards bottom-up
    position = {id(m): i for i, m in enumerate(chosen)}
    for parent in chosen:
        for child in parent.modules():
            if child is not parent and id(child) in position:
                assert position[id(child)] < position[id(parent)]
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, num_labels=10)
    hf = create_backbone(ViTForImageClassification(config))
    assert [type(m).__name__ for m in fsdp.student_blocks(hf)].count("ViTLayer") == 2  # its _no_split_modules
    assert [type(m).__name__ for m in fsdp.student_blocks(vit, ["Mlp"])] == ["Mlp"] * len(blocks)
    with pytest.raises(ValueError, match="no module of those classes"):
        fsdp.student_blocks(vit, ["NoSuchBlock"])


def test_an_unsharded_skeleton_takes_no_memory_and_is_filled_by_a_state_dict():
    import torch

    from hfkd import create_backbone
    from hfkd.training import fsdp

    torch.manual_seed(0)
    student = create_backbone("test_vit", num_classes=10, pretrained=False, image_size=32).eval()
    student.model.register_buffer("not_saved", torch.arange(3.0), persistent=False)
    skeleton = fsdp.unsharded_skeleton(student)
    assert all(p.is_meta for p in skeleton.parameters())
    assert all(p.is_meta for n, p in skeleton.state_dict().items())
    assert torch.equal(skeleton.model.not_saved, torch.arange(3.0))  # not in a state dict: copied
    assert not any(p.is_meta for p in student.parameters())  # the original keeps its weights
    filled = fsdp.materialize(skeleton, {k: v.clone() for k, v in student.state_dict().items()})
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(filled(x).logits, student(x).logits)
    assert filled.preprocess == student.preprocess and filled.source == student.source


@pytest.mark.slow
def test_fully_shard_on_two_cpu_processes_matches_one_unsharded_process_and_resumes(tmp_path):
    """tests/scripts/fsdp_shard.py: KD (sharded teacher) and MEAL V2 (discriminator), 4 clipped SGD steps each;
    FEED one step in bf16."""
    import json

    from helpers.launch import run_two_processes

    run_two_processes(os.path.join(ROOT, "tests", "scripts", "fsdp_shard.py"), str(tmp_path))
    results = json.loads((tmp_path / "result.json").read_text())
    assert sorted(results) == ["feed_bf16", "kd", "meal_v2"]
    # bf16 units: the student's outputs reach FEED's float32 transforms in float32; the weights stay float32
    bf16 = results.pop("feed_bf16")
    assert bf16["output_dtypes"] == ["torch.float32"] and bf16["weight_dtypes"] == ["torch.float32"], bf16
    assert math.isfinite(bf16["loss"]), bf16
    for method, r in results.items():
        # sharded: blocks, the student and the root are units; each process holds half of a weight's rows
        assert r["units"] == ["FSDPBlock", "FSDPDistillationModule", "FSDPTimmBackbone"], r["units"]
        assert r["local_shapes"]["model.patch_embed.proj.weight"][0] * 2 == r["global_rows"]
        assert r["weights_vs_reference"] < 1e-6, (method, r)  # student and method modules, gathered
        assert r["logits_vs_reference"] < 1e-5, (method, r)  # the student unit called alone (evaluation)
        assert r["grad_norms"] == pytest.approx(r["reference_grad_norms"], rel=1e-5)  # clipped alike
        assert r["resumed_vs_uninterrupted"] == 0.0, (method, r)  # the sharded checkpoint's next step
        assert r["saved_vs_reference"] < 1e-6, (method, r)  # the gathered student, saved as a timm folder
        assert r["checkpoint_files"] == ["optimizer_0", "pytorch_model_fsdp_0"]
    assert results["meal_v2"]["method_keys"] and all(k.startswith("method.discriminator.")
                                                      for k in results["meal_v2"]["method_keys"])


@pytest.mark.slow
def test_the_trainer_on_accelerates_fsdp2_path_on_two_cpu_processes_equals_ddp_and_resumes_bitwise(tmp_path):
    """tests/scripts/fsdp_train.py --cpu_as_fsdp: the whole trainer (MEAL V2, a sharded teacher, gradient
    accumulation and clipping, sharded checkpoints, a resume, the gathered save) through Accelerate's FSDP2
    branches, with only the Accelerator's distributed type set to FSDP (Accelerate does not shard on CPU)."""
    import json

    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    script = os.path.join(ROOT, "tests", "scripts", "fsdp_train.py")
    run_two_processes(script, str(tmp_path), "full", "--cpu_as_fsdp", "--shard_teachers")
    run_two_processes(script, str(tmp_path), "resumed", "--cpu_as_fsdp", "--shard_teachers", "--resume")
    run_two_processes(script, str(tmp_path / "ddp"), "ddp")  # the same run, unsharded (DDP), same teacher
    full, resumed = (json.loads((tmp_path / f"{t}.json").read_text()) for t in ("full", "resumed"))
    ddp = json.loads((tmp_path / "ddp" / "ddp.json").read_text())
    assert full["distributed_type"] == "DistributedType.FSDP" and full["sharded"], full
    assert ddp["distributed_type"] == "DistributedType.MULTI_CPU" and not ddp["sharded"], ddp
    assert full["steps"] == resumed["steps"] == ddp["steps"] == 6
    # every process wrote its shard of the model and of the optimiser (DCP), listed in hfkd's manifest
    assert {"pytorch_model_fsdp_0", "optimizer_0", "checkpoint_manifest.json"} <= set(full["checkpoint_files"])
    manifest = json.loads((tmp_path / "run" / "checkpoint-3" / "checkpoint_manifest.json").read_text())["files"]
    assert {"pytorch_model_fsdp_0/__0_0.distcp", "pytorch_model_fsdp_0/__1_0.distcp",
            "optimizer_0/__1_0.distcp", "random_states_1.pkl"} <= set(manifest)
    assert full["teacher_metrics"] == ddp["teacher_metrics"]  # the sharded teacher evaluated as the whole one
    saved = {t: load_file(str(folder / "model.safetensors")) for t, folder in (
        ("full", tmp_path / "student-full"), ("resumed", tmp_path / "student-resumed"),
        ("ddp", tmp_path / "ddp" / "student-ddp"))}
    assert sorted(saved["full"]) == sorted(saved["ddp"])
    for k, v in saved["full"].items():
        assert torch.equal(v, saved["resumed"][k]), k  # resumed from the sharded checkpoint-3: bitwise
        assert (v - saved["ddp"][k]).abs().max().item() < 1e-6, k
    assert full["eval_accuracy"] == ddp["eval_accuracy"]


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.slow
@pytest.mark.skipif(_cuda_devices() < 2, reason="Accelerate runs FSDP only on GPUs (on CPU processes it prepares "
                                               "DDP): the trainer's sharded path needs at least 2 CUDA devices")
@pytest.mark.parametrize("shard_teachers", [False, True])
def test_the_trainer_under_accelerate_fsdp2_saves_resumes_and_gathers_the_student(tmp_path, shard_teachers):
    import json

    import torch
    from safetensors.torch import load_file

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HFKD_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(ROOT, "tests", "scripts", "fsdp_train.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--use_fsdp", "--fsdp_version", "2", "--fsdp_cpu_ram_efficient_loading", "false",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", script, str(tmp_path)]
    for tag, extra in (("full", []), ("resumed", ["--resume"])):
        cmd = launch + [tag] + extra + (["--shard_teachers"] if shard_teachers else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-6000:]
    full = json.loads((tmp_path / "full.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert full["distributed_type"] == "DistributedType.FSDP" and full["sharded"] and full["steps"] == 6
    assert resumed["steps"] == 6
    assert "pytorch_model_fsdp_0" in full["checkpoint_files"] and "optimizer_0" in full["checkpoint_files"]
    a = load_file(str(tmp_path / "student-full" / "model.safetensors"))
    b = load_file(str(tmp_path / "student-resumed" / "model.safetensors"))
    assert sorted(a) == sorted(b)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    assert not any(torch.isnan(v).any() for v in a.values())
