"""User and dataset text in a model card: shown as text, never as Markdown, HTML or metadata."""
import copy

from huggingface_hub import ModelCard
from markdown_it import MarkdownIt

from hfkd.hub.card import create_model_card
from hfkd.hub.markdown import code_span, fenced, markdown_text
from test_model_card import LINEAGE

INJECTED_ID = 'acme/pets"\n---\nlicense: mit'
IMG = "<img src=x onerror=alert(1)>"


def _render(markdown: str) -> str:
    """HTML as a Hub-like renderer (CommonMark, raw HTML allowed, GFM tables) makes it."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)


def _hostile_lineage():
    lineage = copy.deepcopy(LINEAGE)
    lineage["dataset"].update(id=INJECTED_ID, config=f"x`{IMG}`", eval_split="val|idation")
    lineage["teachers"][1]["name"] = f"/home/me/t`{IMG}`"  # a teacher folder's name with backticks
    lineage["teachers"][0].update(hub_id=None, name=f"evil|]({IMG})")  # a | would split its table row
    lineage["method"]["hparams"]["note"] = f"**bold** {IMG}\n# heading"
    lineage["training_args"]["optim"] = f"adamw {IMG}"
    return lineage


def test_hostile_text_stays_text_and_metadata_stays_valid():
    card = create_model_card(_hostile_lineage(), repo_id="acme/student")
    text = str(card)
    parsed = ModelCard(text)  # as the Hub and ModelCard.load parse it
    assert parsed.data.license is None  # the "license: mit" line did not become metadata
    assert parsed.data.to_dict() == card.data.to_dict()
    assert {r.dataset_name for r in parsed.data.eval_results} == {INJECTED_ID}  # kept verbatim, as YAML
    body = parsed.text
    lines = body.splitlines()
    assert "---" not in lines and not any(line.startswith("license:") for line in lines)
    assert not any(line.startswith("# heading") for line in lines)
    html = _render(body)
    assert "<img" not in html and "<strong>bold</strong>" not in html and "<hr" not in html
    assert 'href="&lt;img' not in html and "evil|]" in html  # no link made of the name


def test_a_pipe_does_not_split_a_table_row():
    """GFM splits a row at every unescaped | (inside code spans too): every row has its header's cell count."""
    import re

    text = str(create_model_card(_hostile_lineage(), repo_id="acme/student"))
    cells = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            cells = 0
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        cells = cells or count  # the header line
        assert count == cells, line
    assert "evil\\|]" in text


def test_code_spans_cannot_be_ended_by_their_content():
    for value in ["a`b", "``", "`x`", "a``b```c", "x\ny", "<b>&amp;</b>"]:
        html = _render(f"before {code_span(value)} after")
        assert html.count("<code>") == 1 and "<b>" not in html
        assert html.startswith("<p>before <code>") and html.rstrip().endswith("</code> after</p>")


def test_markdown_text_renders_as_itself():
    for value in ["**a** _b_ [c](d) <i>e</i> &amp; | # f", "1. g", "- h", "`i`", "\\*j\\*"]:
        html = _render(f"x {markdown_text(value)} y")
        assert "<strong>" not in html and "<em>" not in html and "<a " not in html and "<i>" not in html
        assert "<code>" not in html


def test_a_fence_outlasts_its_content():
    html = _render(fenced("a\n```\n<img src=x>\n````", "bibtex") + "\n\nafter")
    assert html.count("<pre>") == 1 and "<img" not in html and html.rstrip().endswith("<p>after</p>")


def test_the_card_says_how_many_images_were_left_out():
    lineage = copy.deepcopy(LINEAGE)
    assert "Unreadable images" not in str(create_model_card(lineage))
    lineage["bad_images"] = {"on_bad_image": "skip", "verify_images": True,
                             "train": {"left_out_by_verification": 2, "skipped_while_reading": 1},
                             "eval": {"left_out_by_verification": 0, "skipped_while_reading": 1}}
    text = str(create_model_card(lineage))
    assert ("- **Unreadable images:** 3 training images left out and 1 evaluation image left out, listed in "
            "`hfkd.json` (`bad_images`)\n") in text


def test_a_teacher_cache_card_shows_its_metadata_as_text(tmp_path):
    """The cache's dataset card is rendered from hfkd_cache.json, a file anyone can edit before pushing."""
    from huggingface_hub import DatasetCard

    from hfkd.cache.card import render_dataset_card
    from hfkd.cache.format import CacheMetadata

    hostile = 'acme/pets"\n---\nlicense: mit <img src=x onerror=alert(1)>'
    metadata = CacheMetadata(
        format_version=2, num_samples=4, num_views=1, num_classes=3, seed=0, augmentation=None,
        student_preprocess={"input_size": [3, 8, 8], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3},
        train_fingerprint="f`p<b>", teachers=[{"name": "t`<img src=x onerror=alert(2)>`", "library": "timm|x"}],
        top_k=None, dtype="float16", ensembled=False, label_names=None, dataset={"id": hostile},
        hfkd_version="0", command="hfkd cache `rm -rf /`")
    card = render_dataset_card(metadata, str(tmp_path), repo_id=None)
    parsed = DatasetCard(card)
    assert "license" not in parsed.data.to_dict()  # the front matter is hfkd's alone
    lines = parsed.text.splitlines()
    assert "---" not in lines and not any(line.startswith("license:") for line in lines)
    html = _render(parsed.text)
    assert "<img" not in html and "<b>" not in html  # shown as text (&lt;img ...), inside code spans or not
    assert "&lt;img src=x onerror=alert(2)&gt;" in html  # the teacher's name is still there, as text
