"""Training: deterministic for a seed, sensible metrics, bad arguments refused."""

import pytest
import torch

from dalif_deploy.base.errors import DaLifError
from dalif_deploy.datasets.loaders import load_dataset
from dalif_deploy.float_model.training import evaluate, predict, train
from dalif_deploy.float_model.zoo import default_config


def _tiny(seed, dataset="digits"):
    shape = [2, 8, 8] if dataset == "digits-events" else [1, 8, 8]
    cfg = default_config("digits-cnn", width=4, input_shape=shape)
    return train(cfg, dataset, epochs=1, timesteps=2, batch_size=32, lr=1e-2, seed=seed,
                 progress=False)


def test_training_is_deterministic_for_a_seed():
    (a, ma), (b, mb) = _tiny(3), _tiny(3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert {k: v for k, v in ma.items() if k != "seconds"} == \
        {k: v for k, v in mb.items() if k != "seconds"}
    c, _ = _tiny(4)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_metrics_and_evaluate_agree():
    model, m = _tiny(0)
    assert not model.training
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["epochs"] == 1
    assert m["test_accuracy"] > 0.5  # one epoch learns (chance 0.1; seeds 0-3 give 0.75-0.82)
    assert evaluate(model, "digits", 2) == m["test_accuracy"]
    ds = load_dataset("digits", "test")
    pred = predict(model, ds.head(7), 2, batch_size=3)
    assert pred.shape == (7,) and pred.tolist() == predict(model, ds, 2)[:7].tolist()


def test_event_data_trains_with_its_own_input_shape():
    model, m = _tiny(0, "digits-events")
    assert model.conv1.in_channels == 2 and 0.0 <= m["test_accuracy"] <= 1.0


@pytest.mark.parametrize("kw,match", [({"epochs": 0}, "epochs"), ({"timesteps": 0}, "timesteps"),
                                      ({"batch_size": 0}, "batch size"), ({"lr": -1.0}, "rate")])
def test_bad_arguments_are_refused(kw, match):
    args = {"epochs": 1, "timesteps": 2, "batch_size": 8, "lr": 1e-3} | kw
    with pytest.raises(DaLifError, match=match):
        train(default_config("digits-cnn", width=2), "digits", progress=False, **args)


def test_input_shape_mismatch_is_refused():
    cfg = default_config("resnet19", width=2)
    with pytest.raises(DaLifError, match="input shape"):
        train(cfg, "digits", epochs=1, progress=False)


def test_cli_width_option_reaches_the_checkpoint(tmp_path):
    """`train --width 4` builds the narrow model and records it in the checkpoint config."""
    from dalif_deploy.cli import main
    from dalif_deploy.float_model.loading import load_checkpoint

    out = tmp_path / "w.pt"
    assert main(["train", "--model", "digits-resnet", "--width", "4", "--epochs", "1", "-T", "2",
                 "--out", str(out)]) == 0
    ck = load_checkpoint(out)
    assert ck.config["width"] == 4 and ck.state_dict["conv1.weight"].shape[0] == 4
    assert main(["train", "--model", "digits-cnn", "--width", "0", "--out",
                 str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
