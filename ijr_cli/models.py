"""The architectures of the two papers (paper 000 App. E.2; paper 002), built for a dataset's input shape and classes.

Parameter counts on CIFAR-10 (3x32x32, 10 classes), which the tests pin: fcn3 656,810 (199,210 on MNIST),
cnn6 511,926, simplecnn 361,706, vgg11 9,750,922, resnet20 268,346 (no BN), wrn (28-10) 36,479,194,
resnet18 11,173,962.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ijr_cli.core.config import ModelConfig, ModelName, check_architecture, check_image_inputs, schema_default
from ijr_cli.core.errors import UserError

MODELS = tuple(n.value for n in ModelName)

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Size of `features`' output for one input, by a dry run (eval mode: no BatchNorm statistics touched)."""
    with temporary_mode(features, train=False), torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


def fcn3(
    input_dim: int,
    num_classes: int,
    widths: Sequence[int] = schema_default(ModelConfig, "widths"),
    activation: str = schema_default(ModelConfig, "activation"),
) -> nn.Module:
    """3FCN (paper 000 App. E.2): Flatten, Linear(n, 200), act, Linear(200, 200), act, Linear(200, C).

    With tanh this is Cohen et al.'s fc-tanh. `widths` sets the hidden layers (any number of them).
    """
    act = _ACTIVATIONS[activation]
    layers: list[nn.Module] = [nn.Flatten()]
    prev = input_dim
    for w in widths:
        layers += [nn.Linear(prev, w), act()]
        prev = w
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def cnn6(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """6CNN (paper 000 App. E.2): four bias-free convolutions (two of stride 2), then Linear(., 100), Linear(100, C)."""
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, stride=1, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=1, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(64, 64, 4, stride=2, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(*features, nn.Linear(flat, 100), nn.ReLU(), nn.Linear(100, num_classes))


def simplecnn(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """SimpleCNN of Jastrzebski et al. 2021, as the Keras CIFAR-10 example without dropout.

    conv32 (same), conv32 (valid), max-pool, conv64 (same), conv64 (valid), max-pool, Linear(., 128), Linear(128, C).
    The convolutions carry no bias, as in the paper's 6CNN: that is the layout whose count is paper 000's
    361,706 (with conv biases it would be 361,898; the paper lists the count, not the layers).
    """
    c = input_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=0, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=0, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return nn.Sequential(*features, nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes))


class VGG(nn.Module):
    """VGG-11 after chengyangfu/pytorch-vgg-cifar10 (paper 000's source), BN and dropout optional (off by default)."""

    CFG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        batch_norm: bool = schema_default(ModelConfig, "batch_norm"),
        dropout: float = schema_default(ModelConfig, "dropout"),
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c = input_shape[0]
        for v in self.CFG_A:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            conv = nn.Conv2d(c, v, 3, padding=1)
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))
            nn.init.zeros_(conv.bias)
            layers += [conv] + ([nn.BatchNorm2d(v)] if batch_norm else []) + [nn.ReLU()]
            c = v
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = _flat_size(self.features, input_shape)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        self.classifier = nn.Sequential(
            *drop, nn.Linear(flat, 512), nn.ReLU(), *drop, nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class _CifarBasicBlock(nn.Module):
    """ResNet-20 block with the parameter-free option-A shortcut (stride-2 subsampling + zero channel padding)."""

    def __init__(self, cin: int, cout: int, stride: int, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(cout, batch_norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(cout, batch_norm)
        self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR (He et al. 2016; the Cohen et al. / akamaster layout), BN optional (off by default)."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, batch_norm: bool = schema_default(ModelConfig, "batch_norm")
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False)
        self.bn1 = _norm(16, batch_norm)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(_CifarBasicBlock(cin, cout, stride if i == 0 else 1, batch_norm))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class _PreActBlock(nn.Module):
    """Pre-activation block with BN and a 1x1 projection when shapes change (ResNet-18 and WRN)."""

    def __init__(self, cin: int, cout: int, stride: int, preact: bool):
        super().__init__()
        self.preact = preact
        if preact:  # WRN (Zagoruyko & Komodakis): BN-ReLU-conv-BN-ReLU-conv
            self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        else:  # ResNet-18 (He et al.): conv-BN-ReLU-conv-BN, add, ReLU
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.shortcut = proj if preact else nn.Sequential(proj, nn.BatchNorm2d(cout))

    def forward(self, x):
        if self.preact:
            o = F.relu(self.bn1(x))
            short = x if self.shortcut is None else self.shortcut(o)
            out = self.conv2(F.relu(self.bn2(self.conv1(o))))
            return out + short
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + short)


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool) with batch norm, as used in paper 002."""

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for i in range(2):
                blocks.append(_PreActBlock(cin, cout, stride if i == 0 else 1, preact=False))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016), no dropout; 28-10 is paper 000's WRN-28-10."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = schema_default(ModelConfig, "depth"),
        width_factor: int = schema_default(ModelConfig, "width_factor"),
    ):
        super().__init__()
        check_architecture("wrn", (), depth, width_factor)
        n = (depth - 4) // 6
        widths = (16, 16 * width_factor, 32 * width_factor, 64 * width_factor)
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        blocks, cin = [], widths[0]
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(_PreActBlock(cin, cout, stride if i == 0 else 1, preact=True))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def build_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    activation: str = schema_default(ModelConfig, "activation"),
    widths: Sequence[int] = schema_default(ModelConfig, "widths"),
    batch_norm: bool = schema_default(ModelConfig, "batch_norm"),
    dropout: float = schema_default(ModelConfig, "dropout"),
    depth: int = schema_default(ModelConfig, "depth"),
    width_factor: int = schema_default(ModelConfig, "width_factor"),
) -> nn.Module:
    """The model `name` for inputs of `input_shape` (without batch dimension) and `num_classes` outputs."""
    if name not in MODELS:
        raise UserError(f"unknown model.name {name!r}; choose one of: {', '.join(MODELS)}")
    input_shape = tuple(int(s) for s in input_shape)
    check_architecture(name, widths, depth, width_factor)
    if name == "fcn3":
        return fcn3(math.prod(input_shape), num_classes, widths, activation)
    if name == "linear":  # (fcn3 without hidden layers: the exact oracles of SCIENCE.md's identities)
        return fcn3(math.prod(input_shape), num_classes, (), activation)
    check_image_inputs(input_shape, model=name)
    try:
        if name == "cnn6":
            return cnn6(input_shape, num_classes)
        if name == "simplecnn":
            return simplecnn(input_shape, num_classes)
        if name == "vgg11":
            return VGG(input_shape, num_classes, batch_norm=batch_norm, dropout=dropout)
        if name == "resnet20":
            return ResNet20(input_shape, num_classes, batch_norm=batch_norm)
        if name == "resnet18":
            return ResNet18(input_shape, num_classes)
        return WideResNet(input_shape, num_classes, depth=depth, width_factor=width_factor)
    except RuntimeError as e:  # a dry run that shrinks the image below one pixel
        raise UserError(
            f"model={name} cannot take {input_shape[1]}x{input_shape[2]} images ({e}); "
            f"use larger images or another model"
        ) from None


@contextlib.contextmanager
def temporary_mode(model: nn.Module, train: bool):
    """`model.train(train)` inside; on exit the previous mode is back and BatchNorm running statistics are as they
    were (in train mode, batch statistics update clones: `frozen_batchnorm_statistics`). The one save-and-restore
    block of ijr: the probe passes, evaluation, input Jacobians and the models' dry runs use it, so a measurement
    never leaves the model in another mode or with other statistics."""
    was_training = model.training
    model.train(train)
    try:
        with frozen_batchnorm_statistics(model):
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module):
    """BatchNorm running statistics are unchanged on exit (SAM's second pass, curvature probes).

    Inside, each BN buffer is replaced by a clone, which absorbs the updates; on exit the original tensor
    objects are put back untouched. (Copying saved values back in place instead would bump the buffers'
    version counters and invalidate autograd graphs built inside, which the cached-graph HVP keeps.)
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            originals = dict(m._buffers)
            saved.append((m, originals))
            for k, b in originals.items():
                if b is not None:
                    m._buffers[k] = b.clone()
    try:
        yield
    finally:
        for m, originals in saved:
            m._buffers.update(originals)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
