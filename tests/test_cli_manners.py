"""The command line as a person types it: one spelling per flag, booleans, --no_* flags, no abbreviations, a
did-you-mean and a one-line usage on a mistake, group titles in words; YAML files that cannot surprise."""
import dataclasses
import re
import time

import pytest
from transformers import HfArgumentParser

from hfkd.cli import main as hfkd_main
from hfkd.cli.distill import parse_distill_args
from hfkd.cli.arguments import DataArguments, ModelArguments
from hfkd.cli.parser import create_parser, parse_args
from hfkd.methods import list_methods
from hfkd.training.args import DistillationArguments


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        hfkd_main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        hfkd_main(list(argv))
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err or str(exit_info.value.code)
    return err


@pytest.mark.parametrize("method", list_methods())
def test_help_shows_each_option_once_with_one_default(capsys, method):
    out = _help(capsys, "distill", "--method", method)
    assert out.startswith("usage: hfkd distill [options]\n")
    options = re.findall(r"^  (--\w+)", out, flags=re.M)
    assert "--learning_rate" in options and len(options) == len(set(options))
    assert "--learning-rate" not in out and "--per-device" not in out  # the dashed forms are read, not listed
    options_text = out.split("Where the defaults come from")[0]  # the epilog explains the defaults, after the options
    for block in re.split(r"\n(?=  --)", options_text):  # a help that says its default gets no second one
        assert block.lower().count("default") <= 1, block
    assert re.search(r"--image_size INT +Training resolution of the student \(default:\s+the\s+student's\s+own,",
                     out)


def test_no_flags_have_their_own_text_and_group_titles_are_words(capsys):
    out = _help(capsys, "distill", "--method", "meal_v2")
    no_teachers = re.search(r"--no_eval_teachers +(.+?)\n  --", out, flags=re.S).group(1)
    assert "Turn eval_teachers off" in no_teachers and "Measure the teachers" not in no_teachers
    titles = re.findall(r"^(\S[^:\n]*):\n", out, flags=re.M)
    assert titles[:4] == ["options", "model", "data", "training"] and "MEALv2 method" in titles
    assert not any("Config" in t or "Arguments" in t or "(" in t for t in titles)


def test_booleans_are_bare_flags_or_take_a_value_and_dashes_are_accepted():
    s = parse_distill_args(["--dry_run", "--eval_teachers", "false", "--channels-last", "--use_cpu", "no"])
    assert s.run.dry_run is True and s.training.eval_teachers is False and s.training.channels_last is True
    assert s.training.use_cpu is False
    s = parse_distill_args(["--no_eval_teachers", "--learning-rate", "0.05", "--per-device-train-batch-size=8"])
    assert s.training.eval_teachers is False and s.training.learning_rate == 0.05
    assert s.training.per_device_train_batch_size == 8
    s = parse_distill_args(["--no-eval-teachers", "--baseline", "false"])  # the baseline is off by default off the demo
    assert s.training.eval_teachers is False and s.run.baseline is False


def test_options_come_from_hfargumentparser_with_one_spelling_and_the_dataclasses_untouched(capsys):
    types = (ModelArguments, DataArguments, DistillationArguments)
    parser = create_parser(types)
    assert isinstance(parser, HfArgumentParser)
    options = parser._option_string_actions
    # HfArgumentParser's dashed aliases are read (the same action) but neither listed nor named in errors
    assert options["--learning-rate"] is options["--learning_rate"]
    assert options["--learning_rate"].option_strings == ["--learning_rate"]
    assert options["--no-eval-teachers"] is options["--no_eval_teachers"]
    assert options["--no_eval_teachers"].option_strings == ["--no_eval_teachers"]
    err = _error(capsys, "distill", "--learning-rate", "fast")
    assert "argument --learning_rate: invalid float value: 'fast'" in err and "--learning-rate" not in err
    # HfArgumentParser writes the resolved type into the field it is given: the dataclasses keep their own
    for dtype in types:
        declared = {k: v for c in reversed(dtype.__mro__) for k, v in vars(c).get("__annotations__", {}).items()}
        assert {f.name: f.type for f in dataclasses.fields(dtype)} == {f.name: declared[f.name]
                                                                       for f in dataclasses.fields(dtype)}
    # an Optional[bool] is a bare flag too (HfArgumentParser makes it take a value)
    assert parse_distill_args(["--use_cpu"]).training.use_cpu is True
    assert parse_distill_args([]).training.use_cpu is None


def test_abbreviations_are_refused_with_the_full_name(capsys):
    err = _error(capsys, "distill", "--learning_rat", "0.1")
    assert "unknown option --learning_rat (did you mean --learning_rate?)" in err
    err = _error(capsys, "distill", "--learning-rat", "0.1")
    assert "did you mean --learning_rate?" in err


def test_an_unknown_flag_is_one_line_and_a_short_usage(capsys):
    err = _error(capsys, "distill", "--num_train_epoch", "3")
    lines = err.strip().splitlines()
    assert lines == ["hfkd distill: error: unknown option --num_train_epoch (did you mean --num_train_epochs?)",
                     "usage: hfkd distill [options]   (every option: hfkd distill --help)"]
    err = _error(capsys, "distill", "--optim", "adamw", "stray")
    assert "unexpected value 'stray'" in err and len(err.strip().splitlines()) == 2


def test_unknown_methods_choices_and_commands_get_a_did_you_mean(capsys):
    err = _error(capsys, "distill", "--method", "meal_v3")
    assert "unknown method 'meal_v3' (did you mean 'meal_v2'?)" in err
    assert err.strip().splitlines()[-1] == "usage: hfkd distill [options]   (every option: hfkd distill --help)"
    err = _error(capsys, "distill", "--lr_scheduler_type", "cosin")
    assert "invalid choice 'cosin' (did you mean cosine?)" in err and len(err.strip().splitlines()) == 2
    err = _error(capsys, "distil")
    assert "unknown command 'distil' (did you mean distill?)" in err and len(err.strip().splitlines()) <= 3
    err = _error(capsys, "distill", "--eval_teachers", "maybe")
    assert "argument --eval_teachers: expected true or false, got 'maybe'" in err


def test_help_shows_the_library_defaults_not_the_demo_preset(capsys):
    """The preset is applied after the parse: the help never runs it (it would load the demo, and torch)."""
    out = _help(capsys, "distill", "--method", "kd")
    lr = re.search(r"--learning_rate FLOAT +(.+?)\n  --", out, flags=re.S).group(1)
    assert f"(default: {DistillationArguments.learning_rate})" in " ".join(lr.split())


# -- YAML ----------------------------------------------------------------------------------------------
PARSE = (DistillationArguments,)


def test_a_key_written_twice_in_yaml_is_refused(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("learning_rate: 0.1\nseed: 1\nlearning_rate: 0.2\n")
    with pytest.raises(ValueError, match=r"dup.yaml: line 3: 'learning_rate' is given twice \(lines 1 and 3\); keep one"):
        parse_args(PARSE, ["--config", str(cfg)])


def test_a_python_tag_in_yaml_is_one_line_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"
    cfg = tmp_path / "tag.yaml"
    cfg.write_text(f"learning_rate: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ValueError) as info:
        parse_args(PARSE, ["--config", str(cfg)])
    message = str(info.value)
    assert "\n" not in message and "line 1" in message and "refused, not run" in message
    assert not marker.exists()
    err = _error(capsys, "distill", "--config", str(cfg))
    lines = err.strip().splitlines()  # the message in one line, then the one-line usage
    assert len(lines) == 2 and lines[1].startswith("usage: hfkd distill") and "Traceback" not in err


def test_an_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path):
    parts, previous = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghi":
        parts.append(f"&{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("learning_rate: [" + ", ".join(parts) + "]\n")
    assert cfg.stat().st_size < 400
    start = time.perf_counter()
    with pytest.raises(ValueError, match="learning_rate must be a number") as info:
        parse_args(PARSE, ["--config", str(cfg)])
    assert len(str(info.value)) < 1000 and time.perf_counter() - start < 10


def test_sgd_without_momentum_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="optim=sgd uses Nesterov momentum, which needs momentum > 0.*optim=momentum"):
        DistillationArguments(optim="sgd", momentum=0.0)
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        DistillationArguments(optim="momentum", momentum=-0.5)
    assert DistillationArguments(optim="momentum", momentum=0.0).momentum == 0.0  # plain SGD is fine
    assert DistillationArguments(optim="adamw", momentum=0.0).optim == "adamw"


def test_a_huge_string_value_is_quoted_short():
    with pytest.raises(ValueError) as info:
        DistillationArguments(lr_scheduler_type="x" * 1_000_000)
    assert "lr_scheduler_type must be one of" in str(info.value) and len(str(info.value)) < 1000
