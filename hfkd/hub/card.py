"""Model cards for distilled students, rendered from the lineage alone.

``create_model_card(lineage)`` is a pure function of what ``hfkd.json`` holds,
so a card can be rebuilt (e.g. with the final repository id at push time) and
tested without training.  The template is ``hfkd/hub/templates/student_card.md.j2``.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Sequence

from ..extras import note_missing
from .card_sections import compression_section, task_sections
from .markdown import code_span, fenced, markdown_text, python_string
from .secrets import redact_secrets

TEMPLATE_PATH = os.path.join(os.path.dirname(__file__), "templates", "student_card.md.j2")
PLOT_FILENAME = "training_curves.png"
# Datasets that are not Hub repositories: never listed in the card's `datasets` metadata.
_NOT_ON_HUB = {"hfkd/digits", "in-memory", None, ""}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_ARXIV = re.compile(r"arXiv[:\s]*(?:preprint\s+arXiv:)?\s*(\d{4}\.\d{4,5})", re.IGNORECASE)


def is_hub_id(value: Any) -> bool:
    """True for a string shaped like a Hub repository id (only such a value becomes a link in a card)."""
    return isinstance(value, str) and bool(_HUB_ID.match(value))


def _pct(value) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def _params(n) -> str:
    return f"{n / 1e6:.2f}M" if isinstance(n, (int, float)) and n else "-"


def _hub_dataset(dataset: Dict[str, Any]) -> Optional[str]:
    name = dataset.get("id")
    if name in _NOT_ON_HUB or not isinstance(name, str) or os.path.exists(name) or not _HUB_ID.match(name):
        return None
    return name


def _model_link(entry: Dict[str, Any], in_table: bool = False) -> str:
    """A Markdown link to a model's Hub page, or its name when it is not on the Hub (as text, escaped)."""
    hub = entry.get("hub_id")
    if is_hub_id(hub):  # only a real Hub id becomes a link
        rev = entry.get("revision")
        suffix = f" (revision {code_span(rev, in_table)})" if rev else ""
        return f"[{hub}](https://huggingface.co/{hub}){suffix}"  # [\w.-] only: nothing to escape
    name = str(entry.get("name") or "?")
    local = local_checkpoint_name(name) or (name if entry.get("local") else None)
    return f"{code_span(local, in_table)} (local checkpoint)" if local else code_span(name, in_table)


def local_checkpoint_name(name: str) -> Optional[str]:
    """A short stable name for a local checkpoint or folder (``local-dir:PATH`` or an absolute path); else ``None``.

    Tables, cards and lineages show it instead of the path, which is the writer's machine's business:
    the folder's name, with its parent's when the folder is a generic ``student``.
    """
    if not isinstance(name, str) or not (name.startswith("local-dir:") or os.path.isabs(name)):
        return None
    path = name[len("local-dir:"):] if name.startswith("local-dir:") else name
    parts = [p for p in os.path.normpath(path).split(os.sep) if p]
    if not parts:
        return "local"
    return "/".join(parts[-2:]) if parts[-1] == "student" and len(parts) > 1 else parts[-1]


def command_without_local_paths(command: str) -> str:
    """A shell command with each absolute path argument (``/x/y`` or ``--opt=/x/y``) shown as its short name."""
    import shlex

    try:
        words = shlex.split(command)
    except ValueError:  # not shell syntax: leave it
        return command

    def short(word: str) -> str:
        flag, eq, value = word.partition("=")
        if eq and flag.startswith("-"):
            return flag + "=" + (local_checkpoint_name(value) or value)
        return local_checkpoint_name(word) or word

    return shlex.join(short(w) for w in words)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", str(text)).strip("-")


def default_model_name(lineage: Dict[str, Any]) -> str:
    """``<architecture>-<method>-<dataset>``: what the model is, not where it was trained."""
    student = lineage.get("student") or {}
    arch = student.get("architecture") or local_checkpoint_name(str(student.get("name"))) or student.get("name")
    method = (lineage.get("method") or {}).get("name", "kd")
    dataset = (lineage.get("dataset") or {}).get("id")
    dataset = (local_checkpoint_name(dataset) or dataset).split("/")[-1] if isinstance(dataset, str) else None
    return "-".join(_slug(p) for p in (arch or "student", method, dataset) if p)


def _cache_entry(cache: Dict[str, Any]) -> Dict[str, Any]:
    """The teacher cache a student was trained from, named without the writer's local paths."""
    source, command = cache.get("source"), cache.get("command")
    cache = {**cache, "command": command_without_local_paths(command)} if command else cache
    return {**cache, "source": local_checkpoint_name(source) or source} if source else cache


def _default_repo_id(lineage: Dict[str, Any]) -> str:
    hub_model_id = (lineage.get("training_args") or {}).get("hub_model_id")
    if hub_model_id:
        return hub_model_id
    return f"your-username/{default_model_name(lineage)}"


def _license(lineage: Dict[str, Any], license: Optional[str]):
    """``(license id or None, sentence for the card)``: the user's choice, else the student source's."""
    if license:
        return license, f"{code_span(license)}, chosen by the author of this run."
    inherited = (lineage.get("student") or {}).get("license")
    if inherited:
        return inherited, (f"{code_span(inherited)}, inherited from the student's source: the timm configuration of the "
                           "weights it started from records this license.")
    return None, ("not set. The author did not choose one (hfkd `--license`) and the student's source records "
                  "none; check the licenses of the teachers, the data and the initial weights before reuse.")


def _results_rows(lineage: Dict[str, Any], baseline: Optional[Dict[str, Any]]) -> List[Dict[str, str]]:
    rows = []
    for i, t in enumerate(lineage.get("teachers") or []):
        m = t.get("metrics") or {}
        rows.append({"model": _model_link(t, in_table=True), "role": f"teacher {i + 1}", "top1": _pct(m.get("eval_accuracy")),
                     "top5": _pct(m.get("eval_top5_accuracy")), "params": _params(t.get("num_parameters")),
                     "throughput": "-"})
    ens = lineage.get("ensemble_metrics") or {}
    if ens.get("eval_accuracy") is not None:
        rows.append({"model": "mean of the teachers' probabilities", "role": "teacher ensemble",
                     "top1": _pct(ens.get("eval_accuracy")), "top5": _pct(ens.get("eval_top5_accuracy")),
                     "params": "-", "throughput": "-"})
    student = lineage.get("student") or {}
    if baseline:
        rows.append({"model": code_span(student.get("architecture") or student.get("name"), in_table=True),
                     "role": "student without distillation (baseline)",
                     "top1": _pct(baseline.get("eval_accuracy")), "top5": _pct(baseline.get("eval_top5_accuracy")),
                     "params": _params(baseline.get("params") or student.get("num_parameters")), "throughput": "-"})
    m = lineage.get("metrics") or {}
    ips = (student.get("inference") or {}).get("images_per_second")
    rows.append({"model": "**this model**", "role": f"student, {markdown_text(lineage.get('method', {}).get('name'))}",
                 "top1": _pct(m.get("eval_accuracy")), "top5": _pct(m.get("eval_top5_accuracy")),
                 "params": _params(student.get("num_parameters")), "throughput": f"{ips:,.0f}" if ips else "-"})
    return rows


def _card_data(lineage: Dict[str, Any], repo_id: str, license: Optional[str], dataset_split: Optional[str]):
    from huggingface_hub import EvalResult, ModelCardData

    student = lineage.get("student") or {}
    method = (lineage.get("method") or {}).get("name", "kd")
    library = student.get("library", "timm")
    distilled = method != "supervised"
    headless = bool(student.get("headless"))  # a backbone without a head (feature_kd without labels)
    task = "image-feature-extraction" if headless else "image-classification"
    tags = [task] + (["knowledge-distillation", "distillation"] if distilled else []) + [method, "hfkd"]
    tags += ["timm", "transformers"] if library == "timm" else ["transformers"]
    dataset = lineage.get("dataset") or {}
    hub_dataset = _hub_dataset(dataset)
    metrics = lineage.get("metrics") or {}
    eval_results = []
    dataset_name = hub_dataset or local_checkpoint_name(str(dataset.get("id"))) or str(dataset.get("id") or "custom")
    common = dict(task_type="image-classification", task_name="Image Classification", dataset_type=dataset_name,
                  dataset_name=dataset_name, dataset_split=dataset_split or dataset.get("eval_split") or "eval",
                  dataset_revision=dataset.get("revision"), dataset_config=dataset.get("config"))
    if metrics.get("eval_accuracy") is not None and not headless:
        eval_results.append(EvalResult(metric_type="accuracy", metric_name="Top-1 accuracy",
                                       metric_value=round(float(metrics["eval_accuracy"]), 6), **common))
    if metrics.get("eval_top5_accuracy") is not None and not headless:
        eval_results.append(EvalResult(metric_type="top_5_accuracy", metric_name="Top-5 accuracy",
                                       metric_value=round(float(metrics["eval_top5_accuracy"]), 6), **common))
    return ModelCardData(
        library_name=library, pipeline_tag=task, license=license, tags=tags,
        datasets=[hub_dataset] if hub_dataset else None, metrics=None if headless else ["accuracy"],
        base_model=student.get("hub_id") or None, model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )


def _bad_images(lineage: Dict[str, Any]) -> Optional[str]:
    """What the card says of the images left out (``on_bad_image="skip"``), or ``None`` when there were none."""
    parts = []
    for split, what in (("train", "training"), ("eval", "evaluation")):
        entry = (lineage.get("bad_images") or {}).get(split) or {}
        count = sum(v for k, v in entry.items() if k in ("left_out_by_verification", "skipped_while_reading")
                    and isinstance(v, int))
        if count:
            parts.append(f"{count} {what} image{'s' if count > 1 else ''} left out")
    return " and ".join(parts) or None


def _citation(lineage: Dict[str, Any]) -> Dict[str, Any]:
    text = (lineage.get("method") or {}).get("citation") or ""
    arxiv = _ARXIV.search(text)
    return {"bibtex": text.strip(), "arxiv": arxiv.group(1) if arxiv else None}


def create_model_card(lineage: Dict[str, Any], baseline: Optional[Dict[str, Any]] = None, *,
                      repo_id: Optional[str] = None, license: Optional[str] = None,
                      plot_filename: Optional[str] = None, dataset_split: Optional[str] = None,
                      extra_sections: Optional[Dict[str, str]] = None, template_path: Optional[str] = None,
                      kd_reference: Optional[Dict[str, Any]] = None):
    """A ``huggingface_hub.ModelCard`` describing a distilled student.

    Args:
        lineage: the dict written to ``hfkd.json`` (``DistillationTrainer.lineage()``).
        baseline: metrics of the same student trained without distillation
            (``eval_accuracy``, ``eval_top5_accuracy``, optional ``params``);
            defaults to ``lineage["baseline"]``.
        repo_id: the Hub id shown in the usage snippets (default: the run's
            ``hub_model_id``, else ``your-username/<architecture>-<method>-<dataset>``).
        license: the card's license; default: the student's pretrained weights' license when
            known, else none (the card says so; hfkd never picks one for you).
        plot_filename: a PNG in the repository to show as the training curves.
        extra_sections: ``{title: markdown}`` appended before the citation.
        kd_reference: metrics of the same student trained with classic KD; adds the gap closed vs KD.
    """
    from huggingface_hub import ModelCard

    lineage = redact_secrets(lineage)
    baseline = baseline if baseline is not None else lineage.get("baseline")
    repo_id = repo_id or _default_repo_id(lineage)
    student = lineage.get("student") or {}
    teachers = lineage.get("teachers") or []
    method = lineage.get("method") or {}
    args = lineage.get("training_args") or {}
    dataset = lineage.get("dataset") or {}
    pre = student.get("preprocess") or {}
    license, license_text = _license(lineage, license)
    card_data = _card_data(lineage, repo_id, license, dataset_split)
    sections = dict(extra_sections or {})
    if lineage.get("compression"):  # written by hfkd.compress; its own template block
        sections = {"Compression": compression_section(lineage["compression"]), **sections}
    context = dict(
        repo_id=repo_id, model_name=repo_id.split("/")[-1], library=student.get("library", "timm"),
        student=student, architecture=student.get("architecture") or student.get("name"), license_text=license_text,
        student_link=_model_link(student),
        mixed_precision=lineage.get("mixed_precision") or (lineage.get("hardware") or {}).get("mixed_precision")
        or args.get("mixed_precision") or "no",
        teachers=[{**t, "link": _model_link(t, in_table=True), "top1": _pct((t.get("metrics") or {}).get("eval_accuracy")),
                   "top5": _pct((t.get("metrics") or {}).get("eval_top5_accuracy")),
                   "params": _params(t.get("num_parameters")),
                   # a zero-shot teacher's classes are its prompts: the card shows them
                   "prompts": ", ".join(code_span(p) for p in t.get("prompt_templates") or [])} for t in teachers],
        method=method, hparams=method.get("hparams") or {}, args=args, dataset=dataset,
        hub_dataset=_hub_dataset(dataset), augmentation=lineage.get("augmentation") or {}, preprocess=pre,
        image_size=(pre.get("input_size") or [None, None, None])[1:], metrics=lineage.get("metrics") or {},
        top1=_pct((lineage.get("metrics") or {}).get("eval_accuracy")),
        top5=_pct((lineage.get("metrics") or {}).get("eval_top5_accuracy")),
        rows=_results_rows(lineage, baseline), has_baseline=bool(baseline),
        params=_params(student.get("num_parameters")), num_classes=len(lineage.get("label_names") or []) or None,
        label_names=lineage.get("label_names") or [], hardware=lineage.get("hardware") or {},
        inference=student.get("inference") or {}, runtime=lineage.get("train_runtime_seconds"),
        samples_per_second=lineage.get("train_samples_per_second"), global_step=lineage.get("global_step"),
        num_processes=lineage.get("num_processes"), versions=lineage.get("versions") or {},
        is_distilled=method.get("name") != "supervised", citation=_citation(lineage),
        headless=bool(student.get("headless")),
        plot_filename=plot_filename, extra_sections={**task_sections(lineage, baseline, kd_reference), **sections},
        teacher_cache=_cache_entry(lineage.get("teacher_cache") or {}), bad_images=_bad_images(lineage),
        # Every user, dataset or file value in the body goes through one of these (hfkd/hub/markdown.py).
        md=markdown_text, code=code_span, py=python_string, fenced=fenced,
    )
    return ModelCard.from_template(card_data, template_path=template_path or TEMPLATE_PATH, **context)


def plot_training_curves(log_history: Sequence[Dict[str, Any]], path: str) -> bool:
    """Write the loss and eval-accuracy curves to ``path`` (PNG); ``False`` if no series has two points
    or matplotlib (the ``plot`` extra) is not installed."""
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    accs = [(e["step"], e["eval_accuracy"]) for e in log_history if "eval_accuracy" in e and "step" in e]
    if len(losses) < 2 and len(accs) < 2:
        return False  # a single point is not a curve
    try:  # the object API: no pyplot, so no global backend or figure state is touched
        from matplotlib.figure import Figure
    except ImportError:
        note_missing("plot", "the training curves are not drawn")
        return False
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot()
    if losses:
        ax.plot(*zip(*losses), color="tab:blue", label="training loss")
        ax.set_ylabel("training loss", color="tab:blue")
    else:
        ax.set_yticks([])
    ax.set_xlabel("optimizer step")
    if accs:
        ax2 = ax.twinx()
        ax2.plot(*zip(*accs), "o-", color="tab:orange", label="eval top-1")
        ax2.set_ylabel("eval top-1 accuracy", color="tab:orange")
    ax.set_title("Training curves")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True
