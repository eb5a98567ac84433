import os

# Nothing in the suite may reach a hub: fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


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
