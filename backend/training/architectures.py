"""K independent networks evaluated as one batched computation.

Every layer holds the parameters of all K models stacked along a leading axis (or as
conv groups), so one matmul or one grouped convolution trains K models at once. No
parameter, normalisation statistic or gradient is shared between models: training
the stack is exactly training K separate networks, only faster.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _init_per_model(weight: torch.Tensor, K: int, fan_in: int, generators: list[torch.Generator]) -> None:
    """Uniform(±1/sqrt(fan_in)) init (PyTorch's Linear/Conv default), each model from its own generator."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        for k, view in enumerate(weight.view(K, -1)):
            view.copy_(torch.rand(view.shape, generator=generators[k]) * (2 * bound) - bound)


class BatchedMLP(nn.Module):
    """K two-layer MLPs (in -> hidden -> classes) as batched matmuls (baddbmm).

    Input x : tensor of shape (K, B, in_features); output logits of shape (K, B, n_classes).
    """

    def __init__(self, K: int, in_features: int, n_classes: int, generators: list[torch.Generator], hidden: int = 128):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(K, in_features, hidden))
        self.b1 = nn.Parameter(torch.empty(K, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(K, hidden, n_classes))
        self.b2 = nn.Parameter(torch.empty(K, 1, n_classes))
        for p, fan_in in ((self.w1, in_features), (self.b1, in_features), (self.w2, hidden), (self.b2, hidden)):
            _init_per_model(p, K, fan_in, generators)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations, shape (K, B, hidden)."""
        return torch.relu(torch.baddbmm(self.b1, x.flatten(2), self.w1))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.b2, features, self.w2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_bn(K: int, c_in: int, c_out: int, generators: list[torch.Generator], stride: int = 1) -> nn.Sequential:
    # groups=K keeps the K models' channels apart; BatchNorm over K*c_out channels
    # then normalises each model's channels with its own statistics.
    conv = nn.Conv2d(K * c_in, K * c_out, 3, stride=stride, padding=1, groups=K, bias=False)
    _init_per_model(conv.weight, K, c_in * 9, generators)
    return nn.Sequential(conv, nn.BatchNorm2d(K * c_out), nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, K: int, c: int, generators: list[torch.Generator]):
        super().__init__()
        self.a = _conv_bn(K, c, c, generators)
        self.b = _conv_bn(K, c, c, generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class BatchedResNet9(nn.Module):
    """K copies of the fast CIFAR-10 ResNet-9 used by the Datamodels paper, as grouped convolutions.

    Input x : tensor of shape (K, B, C, H, W); output logits of shape (K, B, n_classes).
    `width` scales the channel counts (64, 128, 256, 512) so tests can run a narrow copy on CPU.
    """

    OUT_SCALE = 0.125  # the paper's ResNet-9 multiplies logits by 0.125 before the loss

    def __init__(self, K: int, in_channels: int, n_classes: int, generators: list[torch.Generator], width: float = 1.0):
        super().__init__()
        c1, c2, c3, c4 = (max(1, int(round(c * width))) for c in (64, 128, 256, 512))
        self.K, self.c4 = K, c4
        self.body = nn.Sequential(
            _conv_bn(K, in_channels, c1, generators),
            _conv_bn(K, c1, c2, generators),
            nn.MaxPool2d(2),
            _Residual(K, c2, generators),
            _conv_bn(K, c2, c3, generators),
            nn.MaxPool2d(2),
            _conv_bn(K, c3, c4, generators),
            nn.MaxPool2d(2),
            _Residual(K, c4, generators),
            nn.AdaptiveMaxPool2d(1),
        )
        self.fc = nn.Parameter(torch.empty(K, c4, n_classes))
        _init_per_model(self.fc, K, c4, generators)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        K, B = x.shape[:2]
        stacked = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        return self.body(stacked).reshape(B, K, self.c4).transpose(0, 1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return torch.bmm(features, self.fc) * self.OUT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BatchedCNN(nn.Module):
    """K small CNNs for 28x28 / 32x32 images on a CPU: three grouped-conv blocks, global pooling, a linear head.

    A stride-2 first convolution and pooling after the first two blocks keep the work at ~0.85 MFLOP per 28x28
    image forward (16, 32, 64 channels at 14x14, 7x7, 3x3): a dense 3x3 stack at 28x28 would spend 20x that,
    and ResNet-9's ~130 s per CIFAR model on this CPU becomes ~26 s per model for 5 epochs over 30,000
    Fashion-MNIST-sized images (one thread, loaded machine). Each model's channels are its own conv group
    and its own BatchNorm channels.

    Input x : tensor of shape (K, B, C, H, W); output logits of shape (K, B, n_classes).
    """

    def __init__(self, K: int, in_channels: int, n_classes: int, generators: list[torch.Generator], width: float = 1.0):
        super().__init__()
        c1, c2, c3 = (max(1, int(round(c * width))) for c in (16, 32, 64))
        self.K, self.c3 = K, c3
        self.body = nn.Sequential(
            _conv_bn(K, in_channels, c1, generators, stride=2),  # 28 -> 14
            nn.MaxPool2d(2),                                     # -> 7
            _conv_bn(K, c1, c2, generators),
            nn.MaxPool2d(2),                                     # -> 3
            _conv_bn(K, c2, c3, generators),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Parameter(torch.empty(K, c3, n_classes))
        self.fc_bias = nn.Parameter(torch.empty(K, 1, n_classes))
        _init_per_model(self.fc, K, c3, generators)
        _init_per_model(self.fc_bias, K, c3, generators)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally pooled activations, shape (K, B, c3)."""
        K, B = x.shape[:2]
        stacked = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        return self.body(stacked).reshape(B, K, self.c3).transpose(0, 1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.fc_bias, features, self.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# Defaults per architecture; every value can be overridden from the CLI and is recorded in the manifest.
DEFAULT_HPARAMS = {
    "mlp": dict(hidden=128, epochs=30, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4,
                peak_epoch_frac=0.25, augment=False, label_smoothing=0.0),
    # Datamodels paper, App. A: SGD, momentum 0.9, wd 5e-4, triangular LR peaking at epoch 5 of 24, batch 512.
    # The small CNN: the MLP's schedule, larger batches (the convolutions are cheap per image, not per call).
    "cnn": dict(width=1.0, epochs=5, batch_size=128, lr=0.2, momentum=0.9, weight_decay=5e-4,
                peak_epoch_frac=0.25, augment=False, label_smoothing=0.0),
    "resnet9": dict(width=1.0, epochs=24, batch_size=512, lr=0.5, momentum=0.9, weight_decay=5e-4,
                    peak_epoch_frac=5 / 24, augment=True, label_smoothing=0.0),
}

def default_arch(dataset_name: str, image_shape: tuple[int, int, int], device: torch.device) -> str:
    """The MLP for tiny images (digits, 8x8); for images up to 32x32 the small CNN on a CPU (ResNet-9 costs
    ~130 s per model there) and ResNet-9 on a GPU; ResNet-9 for anything larger."""
    pixels = image_shape[0] * image_shape[1]
    if dataset_name == "digits" or pixels <= 16 * 16:
        return "mlp"
    return "cnn" if pixels <= 32 * 32 and device.type == "cpu" else "resnet9"


def build(arch: str, K: int, image_shape: tuple[int, int, int], n_classes: int,
          generators: list[torch.Generator], hparams: dict) -> nn.Module:
    """K freshly initialised models of one architecture, model k drawn from generators[k]."""
    H, W, C = image_shape
    if arch == "mlp":
        return BatchedMLP(K, H * W * C, n_classes, generators, hidden=int(hparams["hidden"]))
    if arch == "cnn":
        return BatchedCNN(K, C, n_classes, generators, width=float(hparams["width"]))
    if arch == "resnet9":
        return BatchedResNet9(K, C, n_classes, generators, width=float(hparams["width"]))
    raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(DEFAULT_HPARAMS)}")
