"""Models: parameter counts from paper 000 App. E (the counts are the test), shapes, and clear errors."""

import pytest
import torch

from ijr_cli.core.errors import UserError
from ijr_cli.models import MODELS, build_model, count_parameters

CIFAR10_COUNTS = {
    "fcn3": 656_810,
    "cnn6": 511_926,
    "simplecnn": 361_706,
    "vgg11": 9_750_922,
    "resnet20": 268_346,
    "wrn": 36_479_194,
    "resnet18": 11_173_962,
    "linear": 30_730,  # 3072 x 10 + 10
}


@pytest.mark.parametrize("name", MODELS)
def test_cifar10_parameter_counts(name):
    assert count_parameters(build_model(name, (3, 32, 32), 10)) == CIFAR10_COUNTS[name]


def test_other_paper_counts():
    assert count_parameters(build_model("fcn3", (1, 28, 28), 10)) == 199_210  # 3FCN-MNIST
    assert count_parameters(build_model("vgg11", (3, 32, 32), 100)) == 9_797_092  # VGG-CIFAR-100
    assert count_parameters(build_model("wrn", (3, 32, 32), 100)) == 36_536_884  # WRN-28-10 CIFAR-100


@pytest.mark.parametrize("name", ["fcn3", "cnn6", "simplecnn", "resnet20", "resnet18"])
def test_forward_shapes_small_images(name):
    model = build_model(name, (1, 16, 16), 7)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 7)


def test_wrn_small_and_batch_norm_options():
    assert build_model("wrn", (3, 8, 8), 5, depth=10, width_factor=1)(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    bn = build_model("vgg11", (3, 32, 32), 10, batch_norm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build_model("resnet20", (3, 32, 32), 10).modules())


def test_fcn3_activation_and_widths():
    m = build_model("fcn3", (40,), 10, widths=[7, 5, 3], activation="tanh")
    assert [type(x).__name__ for x in m] == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert count_parameters(m) == 40 * 7 + 7 + 7 * 5 + 5 + 5 * 3 + 3 + 3 * 10 + 10


def test_conv_model_on_vectors_is_a_user_error():
    with pytest.raises(UserError, match="needs image inputs"):
        build_model("cnn6", (40,), 10)


def test_too_small_images_is_a_user_error():
    with pytest.raises(UserError, match="cannot take 8x8 images"):
        build_model("vgg11", (1, 8, 8), 10)


def test_bad_wrn_depth():
    with pytest.raises(UserError, match="6n\\+4"):
        build_model("wrn", (3, 32, 32), 10, depth=27)


def test_model_building_leaves_no_batchnorm_trace():
    m = build_model("resnet18", (3, 32, 32), 10)
    bn = next(x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 0 and m.training
