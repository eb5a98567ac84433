import os

# Nothing in the suite may reach a hub: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hub_server import HubServer  # noqa: E402

FAKE_TOKEN = "hf_FakeTestTokenForTheLocalServer0123456789"


def run_args(output_dir, **overrides):
    """A short test run's DistillationArguments: batch 32, lr 3e-3, logging every step, and no saving, evaluation,
    teacher evaluation or progress bar; ``overrides`` win."""
    from hfkd import DistillationArguments

    settings = dict(output_dir=str(output_dir), per_device_train_batch_size=32, learning_rate=3e-3,
                    save_strategy="no", eval_strategy="no", disable_tqdm=True, eval_teachers=False, logging_steps=1)
    return DistillationArguments(**{**settings, **overrides})


@pytest.fixture(scope="session")
def digits():
    """The embedded dataset, loaded once."""
    from hfkd.data import load_image_dataset

    return load_image_dataset()


@pytest.fixture(scope="session")
def small_digits(digits):
    """A small, class-balanced slice of the digits for fast training tests."""
    from hfkd.data.loading import ImageClassificationData

    return ImageClassificationData(train=digits.train.select(range(256)), eval=digits.eval.select(range(100)),
                                   image_column=digits.image_column, label_column=digits.label_column,
                                   label_names=digits.label_names, source=digits.source)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFKD_CACHE", str(tmp_path / "hfkd-cache"))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local Hub; this process and its children talk to it (and only to it) with a fake token."""
    from huggingface_hub import constants, hf_api

    with HubServer(max_seconds=240) as server:
        home = tmp_path / "hf-home"
        env = {"HF_ENDPOINT": server.endpoint, "HF_TOKEN": FAKE_TOKEN, "HF_HOME": str(home),
               "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        # huggingface_hub reads these at import: patch the live values for this process.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        monkeypatch.setattr(hf_api.api, "endpoint", server.endpoint)
        yield server
