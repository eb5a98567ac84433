"""Zero-shot (CLIP) teachers: a tiny random CLIP saved to a folder, with a tokenizer built here."""
import os
import shutil
import string

import pytest
import torch
import torch.nn.functional as F

from hfkd.models import create_backbone, create_teacher

LABELS = ["cat", "dog", "red bird"]
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


def _tokenizer():
    """A character-level CLIP BPE tokenizer (no merges) with CLIP's begin and end tokens."""
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + ".,'-!?"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[])


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = str(tmp_path_factory.mktemp("clip"))
    tokenizer = _tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=list(MEAN),
                       image_std=list(STD)).save_pretrained(folder)
    return folder


def _clip_logits(folder, prompts, x):
    from transformers import AutoTokenizer, CLIPModel

    tokens = AutoTokenizer.from_pretrained(folder)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return CLIPModel.from_pretrained(folder).eval()(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=x).logits_per_image


def test_tokenizer_marks_begin_and_end(clip_folder):
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(clip_folder)("a cat")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 1  # CLIP pools the text at its end token


def test_one_template_logits_equal_clip_logits_per_image(clip_folder):
    backbone = create_backbone(clip_folder, label_names=LABELS, prompt_templates=["a photo of a {}."])
    assert backbone.num_classes == 3 and backbone.label_names == LABELS
    # CLIP's own preprocessing, from its preprocessor_config.json
    assert backbone.preprocess.image_size == (32, 32)
    assert backbone.preprocess.mean == pytest.approx(MEAN) and backbone.preprocess.std == pytest.approx(STD)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ours = backbone(x).logits
    expected = _clip_logits(clip_folder, [f"a photo of a {n}." for n in LABELS], x)
    assert ours.shape == (4, 3)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_prompt_ensembling_by_hand(clip_folder):
    from transformers import AutoTokenizer, CLIPModel

    templates = ["a photo of a {}.", "a drawing of the {}!", "{}"]
    backbone = create_backbone(clip_folder, label_names=LABELS, prompt_templates=templates)
    model = CLIPModel.from_pretrained(clip_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        per_class = []
        for label in LABELS:
            tokens = tokenizer([t.format(label) for t in templates], padding=True, return_tensors="pt")
            text = model.get_text_features(input_ids=tokens["input_ids"],
                                           attention_mask=tokens["attention_mask"]).pooler_output
            text = text / text.norm(dim=-1, keepdim=True)
            mean = text.mean(0)
            per_class.append(mean / mean.norm())
        image = model.get_image_features(pixel_values=x).pooler_output
        image = image / image.norm(dim=-1, keepdim=True)
        expected = model.logit_scale.exp() * image @ torch.stack(per_class).t()
        ours = backbone(x).logits
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    # one template alone gives other logits: the ensemble is not the first template
    single = create_backbone(clip_folder, label_names=LABELS, prompt_templates=templates[:1])
    with torch.no_grad():
        assert not torch.allclose(single(x).logits, ours, atol=1e-4)
    assert backbone.source["prompt_templates"] == templates


def test_zero_shot_teacher_takes_the_students_labels(clip_folder):
    student_labels = ["dog", "cat"]
    teacher = create_teacher(clip_folder, num_classes=2, label_names=student_labels,
                             prompt_templates=["a photo of a {}."])
    assert teacher.backbone.label_names == student_labels and teacher.permutation is None
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(teacher(x).logits,
                               _clip_logits(clip_folder, ["a photo of a dog.", "a photo of a cat."], x),
                               atol=1e-5, rtol=0)
    # the default template is the CLIP paper's
    default = create_teacher(clip_folder, num_classes=2, label_names=student_labels)
    assert default.backbone.prompt_templates == ["a photo of a {}."]


def test_zero_shot_needs_label_names_and_good_templates(clip_folder):
    with pytest.raises(ValueError, match="needs the label names"):
        create_backbone(clip_folder)
    with pytest.raises(ValueError, match="exactly one"):
        create_backbone(clip_folder, label_names=LABELS, prompt_templates=["a photo of a cat"])
    with pytest.raises(ValueError, match="exactly one"):
        create_backbone(clip_folder, label_names=LABELS, prompt_templates=["a {} of {}"])
    with pytest.raises(ValueError, match="is empty"):
        create_backbone(clip_folder, label_names=LABELS, prompt_templates=[])
    with pytest.raises(ValueError, match="repeat"):
        create_backbone(clip_folder, label_names=["cat", "cat"])


def test_prompt_templates_refused_for_a_classifier():
    with pytest.raises(ValueError, match="zero-shot"):
        create_backbone("test_resnet", num_classes=3, pretrained=False, prompt_templates=["a photo of a {}."])


def test_zero_shot_teacher_with_pickled_weights_only_is_refused(clip_folder, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(clip_folder, folder)
    torch.save(load_file(os.path.join(folder, "model.safetensors")), folder / "pytorch_model.bin")
    os.remove(folder / "model.safetensors")
    with pytest.raises(ValueError, match="safetensors only"):
        create_backbone(str(folder), label_names=LABELS)


def test_zero_shot_pooled_features_and_maps(clip_folder):
    from hfkd.models import OutputRequest

    backbone = create_backbone(clip_folder, label_names=LABELS)
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 32), OutputRequest(pooled=True, feature_stages=("last",)))
    assert out.pooled.shape == (2, 16)  # the image embedding in the joint space
    assert out.feature_maps["last"].shape == (2, 17, 32)  # 16 patches and the class token
    # the logits are the scaled cosine of that embedding with the class embeddings
    cos = F.normalize(out.pooled, dim=-1) @ backbone.class_embeddings.t()
    torch.testing.assert_close(out.logits, backbone.model.logit_scale.exp() * cos, atol=1e-5, rtol=0)


def test_a_teacher_cache_of_a_zero_shot_teacher_equals_its_online_logits(clip_folder, digits, tmp_path):
    from hfkd import cache_teacher_outputs
    from hfkd.cache import TeacherCache
    from hfkd.data.transforms import AugmentConfig, ImageClassificationDataset, create_image_transform

    train = digits.train.select(range(24))
    names = train.features["label"].names
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32, label_names=names)
    teacher = create_teacher(clip_folder, student.preprocess, 10, names, prompt_templates=["a photo of the number {}."])
    augment = AugmentConfig(scale=(0.5, 1.0), hflip=0.5, color_jitter=None)
    folder = str(tmp_path / "cache")
    cache_teacher_outputs([teacher], train, folder, student=student, augment=augment, num_views=1, seed=0,
                          batch_size=8)
    cache = TeacherCache(folder, draw_seed=0)
    # the cache says what the teacher's logits mean: its prompts and classes
    (entry,) = cache.metadata.teachers
    assert entry["prompt_templates"] == ["a photo of the number {}."] and entry["label_names"] == list(names)
    replay = ImageClassificationDataset(train, create_image_transform(student.preprocess, True, augment),
                                        "image", "label", seed=0)
    cache.attach(replay, student.preprocess)
    rows = [replay[i] for i in range(8)]
    x = torch.stack([r["pixel_values"] for r in rows])
    (stored,) = cache.teacher_outputs({"cache_logits": torch.stack([r["cache_logits"] for r in rows])})
    torch.testing.assert_close(stored.logits, teacher(x).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method_name, kwargs", [("kd", {"alpha": 0.5}), ("meal_v2", {})])
def test_methods_distil_from_a_zero_shot_teacher(clip_folder, small_digits, tmp_path, method_name, kwargs):
    from conftest import run_args
    from hfkd import DistillationTrainer, create_method

    names = small_digits.label_names
    student = create_backbone("test_resnet", num_classes=10, pretrained=False, image_size=32, label_names=names)
    teacher = create_teacher(clip_folder, student.preprocess, 10, names)
    trainer = DistillationTrainer(student, [teacher], create_method(method_name, **kwargs),
                                  run_args(tmp_path, max_steps=2, use_cpu=True, per_device_train_batch_size=8),
                                  train_dataset=small_digits.train)
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    from hfkd.hub.card import create_model_card
    from hfkd.training.lineage import build_lineage

    lineage = build_lineage(trainer, measure_inference=False)
    (entry,) = lineage["teachers"]
    assert entry["prompt_templates"] == ["a photo of a {}."] and entry["label_names"] == list(names)
    card = str(create_model_card(lineage))
    assert "zero-shot (CLIP) teacher" in card and "`a photo of a {}.`" in card


def test_dry_run_resolves_a_zero_shot_teacher_with_the_command_lines_prompts(clip_folder, tmp_path, capsys):
    from hfkd.cli import main as hfkd_main

    tiny = ["--student", "test_resnet", "--max_train_samples", "64", "--per_device_train_batch_size", "16",
            "--eval_strategy", "no", "--eval_teachers", "false", "--disable_tqdm", "true", "--save_strategy", "no"]
    report = hfkd_main(["distill", "--method", "meal_v2", *tiny, "--teachers", clip_folder,
                        "--teacher_prompts", "a photo of a {}.", "a drawing of the number {}.",
                        "--output_dir", str(tmp_path / "never"), "--dry_run"])
    out = capsys.readouterr().out
    assert report["problems"] == []
    assert "is zero-shot (CLIP): its 10 classes are the student's label names" in out
    assert "a drawing of the number {}." in out
    # the closing note's real-size cost: 1 teacher forward per image and epoch; per 1M images and view in float16,
    # 28 bytes of keys plus, per teacher, top-5: 5 * (2 + 4) + 2 bytes, full: 10 * 2 bytes
    cost = report["teacher_cost"]
    assert cost["teacher_forwards_per_image_per_epoch"] == 1
    assert cost["cache_bytes_per_million_views_float16"] == {"top5": 60e6, "full": 48e6}
    assert "teacher cost: 1 teacher forward(s) per training image per epoch" in out and "top5 0.06 GB" in out


def test_teacher_prompts_per_teacher_from_yaml():
    from hfkd.cli.arguments import ModelArguments

    shared = ModelArguments(teachers=["clip_a", "resnet"], teacher_prompts="a photo of a {}.")
    assert shared.prompts_for("clip_a") == ["a photo of a {}."]
    assert ModelArguments(teachers=["clip_a"]).prompts_for("clip_a") is None  # the default template
    per_teacher = ModelArguments(teachers=["clip_a", "clip_b"],
                                 teacher_prompts={"clip_a": ["a {}."], "clip_b": "a sketch of a {}."})
    assert per_teacher.prompts_for("clip_a") == ["a {}."] and per_teacher.prompts_for("clip_b") == ["a sketch of a {}."]
    assert per_teacher.prompts_for("clip_c") is None


@pytest.mark.slow
@pytest.mark.parametrize("method", ["meal_v2", "feature_kd"])
def test_two_processes_distil_from_a_zero_shot_teacher(clip_folder, tmp_path, method):
    from safetensors.torch import load_file

    from helpers.launch import run_two_processes

    script = os.path.join(os.path.dirname(__file__), "scripts", "any_teacher_ddp.py")
    run_two_processes(script, str(tmp_path), clip_folder, method)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0["num_processes"].item() == 2 and r0["steps"].item() == 6  # 96 images / (2 x 16) x 2 epochs
    trained = [k for k in r0 if k.startswith(("student.", "method."))]
    assert any(k.startswith("student.") for k in trained)
    assert method != "feature_kd" or any(k.startswith("method.projectors") for k in trained)
    for k in trained:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
    assert any(not torch.equal(r0[k], r0[f"initial.{k}"]) for k in trained if k.startswith("student."))
