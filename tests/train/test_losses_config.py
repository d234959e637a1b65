import pytest
import torch

from drtrt.config import from_dict, to_dict
from drtrt.errors import ConfigError
from drtrt.task import TaskSpec
from drtrt.train.losses import LossConfig, class_balanced_weights, multitask_loss


def test_class_balanced_weights_favour_rare_classes():
    target = torch.zeros(1, 100, 100, dtype=torch.long)
    target[0, :2, :5] = 3     # 10 MA pixels
    target[0, 50:, :] = 1     # 5000 EX pixels
    w = class_balanced_weights(target, 5, beta=0.999)
    assert w[2] == 0 and w[4] == 0           # absent classes
    assert w[3] > w[1] > 0 and w[3] > w[0]
    assert w.sum().item() == pytest.approx(3.0)   # normalised to the number of present classes


def test_ignored_labels_give_zero_loss_terms():
    outputs = {"grade_logits": torch.randn(2, 5, requires_grad=True),
               "lesion_logits": torch.randn(2, 5, 8, 8, requires_grad=True)}
    grade = torch.tensor([-1, -1])
    mask = torch.full((2, 8, 8), 255)
    losses = multitask_loss(outputs, grade, mask, LossConfig(), TaskSpec())
    assert losses["total"].item() == 0.0
    losses["total"].backward()  # still differentiable


def test_partial_labels_use_only_known_parts():
    torch.manual_seed(0)
    outputs = {"grade_logits": torch.randn(2, 5), "lesion_logits": torch.randn(2, 5, 8, 8)}
    grade = torch.tensor([3, -1])
    mask = torch.full((2, 8, 8), 255)
    mask[1] = 0
    losses = multitask_loss(outputs, grade, mask, LossConfig(dice_weight=0.5), TaskSpec())
    expected = torch.nn.functional.cross_entropy(outputs["grade_logits"][:1], grade[:1])
    assert losses["grade"].item() == pytest.approx(expected.item())
    assert losses["lesion"].item() > 0


def test_config_round_trip_and_unknown_key():
    from drtrt.train.train_config import TrainConfig

    cfg = TrainConfig(epochs=3)
    assert TrainConfig.from_dict(to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="must be int"):
        from_dict(TrainConfig, {"epochs": "many"})
