"""Write a student in its own library's format, atomically, as safetensors only."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from contextlib import contextmanager
from typing import Any, Dict, Optional

from ..files import (SAVE_MANIFEST_FILE, WRITER_MARKER, check_save_target, disk_full_explained, mark_writer,
                     refuse_symlink, relative_files, remove_abandoned, replace_folder)
from ..models.backbone import Backbone
from .secrets import redact_secrets

HFKD_METADATA_FILE = "hfkd.json"
# Weight formats that unpickle (run code) on load: never written next to a student.
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".ckpt", ".pth.tar")


def _new_sibling(parent: str, prefix: str) -> str:
    """A new empty folder ``parent/prefix<pid>-<random>``, made with the user's umask.

    (``tempfile.mkdtemp`` makes 0700 folders, and the renamed save would keep that mode.)
    """
    while True:
        path = os.path.join(parent, f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


@contextmanager
def atomic_directory(path: str, needed_bytes: Optional[int] = None):
    """Yield a temporary sibling folder that replaces ``path`` only if the block succeeds.

    The caller checks that ``path`` may be replaced (:func:`check_save_target`); the temporary folder
    carries hfkd's writer marker until it is in place, so one left by a killed writer is removed by the
    next save into the same parent, and nothing else is.  A symbolic link at ``path`` is refused.  A
    full disk removes the temporary folder and raises :class:`hfkd.files.DiskFullError` naming the disk
    (``needed_bytes``: about how much the save writes, for the message).
    """
    path = os.path.abspath(path)
    refuse_symlink(path, "the save folder")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(path)
    remove_abandoned(parent, (f".{base}.tmp-", f".{base}.old-"))
    with disk_full_explained(parent, f"the save {path}", needed=needed_bytes, where_to_change="a save folder"):
        tmp = _new_sibling(parent, f".{base}.tmp-")
    with disk_full_explained(parent, f"the save {path}", needed=needed_bytes, cleanup=[tmp],
                             where_to_change="a save folder"):
        try:
            mark_writer(tmp)
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_folder(tmp, path, old_prefix=f".{base}.old-")


def _save_timm(student: Backbone, out: str, metadata: Optional[Dict[str, Any]]) -> None:
    from timm.models import save_for_hf

    pre = student.preprocess
    model_config: Dict[str, Any] = {}
    if student.label_names is not None:
        model_config["label_names"] = list(student.label_names)
    data_config = dict(input_size=list(pre.input_size), mean=list(pre.mean), std=list(pre.std),
                       interpolation=pre.interpolation, crop_pct=pre.crop_pct, crop_mode=pre.crop_mode)
    save_for_hf(student.model, out, model_config=model_config, safe_serialization=True, data_config=data_config)
    config_path = os.path.join(out, "config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    # transformers' TimmWrapper passes num_classes itself and crashes on a duplicate (docs/hub.md, "Format notes").
    config.get("model_args", {}).pop("num_classes", None)
    # The registry tag and license describe the checkpoint the student started from, not the student
    # (its license is the model card's: docs/hub.md).
    config.get("pretrained_cfg", {}).pop("tag", None)
    config.get("pretrained_cfg", {}).pop("license", None)
    if metadata:
        config["hfkd"] = metadata
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def _image_processor(student: Backbone):
    """A transformers image processor doing the student's own eval transform.

    hfkd evaluates with timm's transform: for a square size, resize the short
    side to ``floor(size / crop_pct)``, then centre-crop ``size``.  ConvNext's
    processor does exactly that below 384 px and Bit's (short side, then crop)
    above.  For a non-square size timm resizes to ``(h, w) / crop_pct`` before the
    crop, which Bit's short-side resize only approximates (no processor does it).
    """
    from transformers import BitImageProcessor, ConvNextImageProcessor

    pre = student.preprocess
    _, h, w = pre.input_size
    resample = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}.get(pre.interpolation, 3)
    common = dict(image_mean=list(pre.mean), image_std=list(pre.std), resample=resample, do_resize=True,
                  do_rescale=True, do_normalize=True)
    if h == w and h < 384:
        return ConvNextImageProcessor(size={"shortest_edge": h}, crop_pct=pre.crop_pct, **common)
    return BitImageProcessor(size={"shortest_edge": int(min(h, w) / pre.crop_pct)}, do_center_crop=True,
                             crop_size={"height": h, "width": w}, do_convert_rgb=pre.input_size[0] == 3, **common)


def _save_transformers(student: Backbone, out: str, metadata: Optional[Dict[str, Any]]) -> None:
    model = student.model
    if student.label_names is not None:
        model.config.id2label = {i: n for i, n in enumerate(student.label_names)}
        model.config.label2id = {n: i for i, n in enumerate(student.label_names)}
    if metadata:
        model.config.hfkd = metadata
    elif hasattr(model.config, "hfkd"):
        del model.config.hfkd  # a lineage from an earlier save must not describe this one
    model.save_pretrained(out)  # transformers writes safetensors only (pickle leftovers are removed below)
    _image_processor(student).save_pretrained(out)


def save_student(student: Backbone, save_directory: str, metadata: Optional[Dict[str, Any]] = None,
                 extra_files: Optional[Dict[str, bytes]] = None) -> str:
    """Save ``student`` so that its own library loads it; returns the folder.

    timm students get timm's Hub layout (``config.json`` + ``model.safetensors``),
    transformers students ``save_pretrained`` output plus an image processor.
    ``metadata`` (the distillation lineage) goes to ``hfkd.json``, with
    credentials removed; ``extra_files`` (e.g. the
    ``README.md`` card, a plot) are written as given.  The folder is replaced
    atomically: a failure leaves the old one.  An existing folder is replaced only
    when it is an earlier hfkd save holding nothing but the files that save wrote;
    any other non-empty folder, or a file, is refused (nothing is deleted).
    """
    writers = {"timm": _save_timm, "transformers": _save_transformers}
    metadata = redact_secrets(metadata) if metadata is not None else None
    if student.library not in writers:
        raise ValueError(
            f"cannot save a plain {type(student.model).__name__} in a native format; use a timm or transformers student"
        )
    check_save_target(save_directory)
    weight_bytes = sum(t.numel() * t.element_size() for t in student.model.state_dict().values())
    with atomic_directory(save_directory, needed_bytes=weight_bytes) as tmp:
        # The lineage lives in hfkd.json only: config.json stays the model library's own file (docs/hub.md).
        writers[student.library](student, tmp, None)
        if metadata is not None:
            with open(os.path.join(tmp, HFKD_METADATA_FILE), "w", encoding="utf-8") as f:
                json.dump(metadata, f, indent=2, default=str)
        for name, data in (extra_files or {}).items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        for f in os.listdir(tmp):  # safetensors only
            if f.endswith(PICKLE_SUFFIXES):
                os.remove(os.path.join(tmp, f))
        if not any(f.endswith(".safetensors") for f in os.listdir(tmp)):
            raise RuntimeError(f"saving {student.name} wrote no .safetensors file; nothing was replaced at {save_directory}")
        written = [f for f in relative_files(tmp) if f != WRITER_MARKER]
        with open(os.path.join(tmp, SAVE_MANIFEST_FILE), "w", encoding="utf-8") as f:
            json.dump({"writer": "hfkd", "files": written}, f, indent=2)
    return save_directory
