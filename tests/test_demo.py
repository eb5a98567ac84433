"""The demo's cached teachers must not depend on what the process did before training them."""
import torch

from hfkd.cli.arguments import DataArguments
from hfkd.cli.demo import train_demo_model
from hfkd.cli.pipeline import load_data


def test_demo_training_is_independent_of_the_global_rng(tmp_path):
    data = load_data(DataArguments(max_train_samples=32), seed=0)
    weights = []
    for i, draws in enumerate((0, 7)):
        torch.rand(draws)  # whatever ran before in the process moves the global generator
        trainer = train_demo_model("test_resnet", data, str(tmp_path / str(i)), 1, seed=0, max_steps=2,
                                      per_device_train_batch_size=16, disable_tqdm=True, eval_teachers=False)
        weights.append(torch.cat([p.detach().flatten() for p in trainer.unwrapped_student().parameters()]))
    assert torch.equal(weights[0], weights[1])
