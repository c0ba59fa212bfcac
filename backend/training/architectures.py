"""K independent networks evaluated as one batched computation.

Every layer holds the parameters of all K models stacked along a leading axis (or as
conv groups), so one matmul or one grouped convolution trains K models at once. No
parameter, normalisation statistic or gradient is shared between models: training
the stack is exactly training K separate networks, only faster.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        """features() of images x (N, ...) that all K models see (the margins' targets), shape (K, N, hidden): the
        K first layers as one (K*hidden, D) x (D, N) GEMM, written transposed, (K, hidden, N), so that the head's
        GEMMs run N wide (with `head`, 1.4x the batched GEMMs over K copies of x; bench_training.py)."""
        K, D, H = self.w1.shape
        stacked = torch.addmm(self.b1.reshape(K * H, 1), self.w1.transpose(1, 2).reshape(K * H, D), x.flatten(1).T)
        return stacked.relu_().view(K, H, -1).transpose(1, 2)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (K, B, n_classes), computed transposed, (K, n_classes, B): ten-wide GEMM outputs are slow on CPU."""
        return torch.baddbmm(self.b2.transpose(1, 2), self.w2.transpose(1, 2), features.transpose(1, 2)).transpose(1, 2)

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


def _dirac_per_model(conv: nn.Conv2d, K: int) -> None:
    """airbench's identity init: each model's first c_in output channels copy its inputs (an implicit residual)."""
    c_out, c_in = conv.weight.shape[0] // K, conv.weight.shape[1]
    with torch.no_grad():
        for k in range(K):
            nn.init.dirac_(conv.weight[k * c_out:k * c_out + min(c_in, c_out)])


class _AirbenchGroup(nn.Module):
    """airbench's ConvGroup: conv, max-pool, BatchNorm, GELU, conv, BatchNorm, GELU; K models as conv groups.

    BatchNorm's scale is fixed at 1 (not trained) and its bias is trained with a larger learning rate
    (`bias_lr_scale`); eps 1e-12 and running-stat momentum 0.4, as airbench94."""

    def __init__(self, K: int, c_in: int, c_out: int, generators: list[torch.Generator]):
        super().__init__()
        self.conv1 = nn.Conv2d(K * c_in, K * c_out, 3, padding=1, groups=K, bias=False)
        self.conv2 = nn.Conv2d(K * c_out, K * c_out, 3, padding=1, groups=K, bias=False)
        self.norm1, self.norm2 = nn.BatchNorm2d(K * c_out, eps=1e-12, momentum=0.4), nn.BatchNorm2d(K * c_out, eps=1e-12, momentum=0.4)
        for conv, fan_in in ((self.conv1, c_in * 9), (self.conv2, c_out * 9)):
            _init_per_model(conv.weight, K, fan_in, generators)
            _dirac_per_model(conv, K)
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class BatchedAirbench(nn.Module):
    """K copies of airbench94's network (Keller Jordan, github.com/KellerJordan/cifar10-airbench, airbench94.py):
    a frozen 2x2 patch-whitening convolution (its filters the eigenvectors of each model's own training patches'
    covariance, scaled by 1/sqrt(eigenvalue), and their negatives; `init_whitening`), GELU, three conv groups of
    64, 256, 256 channels with max-pooling, a global max-pool and a bias-free linear head scaled by 1/9.

    whiten=False replaces the whitening by an ordinary trained 2x2 convolution (the trick off, for benchmarks).
    Input x : tensor of shape (K, B, C, H, W) with H, W >= 16; output logits of shape (K, B, n_classes).
    """

    OUT_SCALE = 1 / 9
    WHITEN_IMAGES = 5000  # airbench94 estimates the patch covariance on 5,000 training images

    def __init__(self, K: int, in_channels: int, n_classes: int, generators: list[torch.Generator], width: float = 1.0,
                 whiten: bool = True):
        super().__init__()
        c1, c2, c3 = (max(1, int(round(c * width))) for c in (64, 256, 256))
        cw = 2 * in_channels * 4
        self.K, self.c3, self.whiten = K, c3, whiten
        self.whiten_conv = nn.Conv2d(K * in_channels, K * cw, 2, groups=K, bias=True)
        _init_per_model(self.whiten_conv.weight, K, in_channels * 4, generators)
        with torch.no_grad():
            self.whiten_conv.bias.zero_()
        self.whiten_conv.weight.requires_grad_(not whiten)
        self.groups = nn.Sequential(_AirbenchGroup(K, cw, c1, generators), _AirbenchGroup(K, c1, c2, generators),
                                    _AirbenchGroup(K, c2, c3, generators))
        self.fc = nn.Parameter(torch.empty(K, c3, n_classes))
        _init_per_model(self.fc, K, c3, generators)

    @torch.no_grad()
    def init_whitening(self, train_x: torch.Tensor, subsets: torch.Tensor, eps: float = 5e-4) -> None:
        """Set model k's whitening filters from the 2x2 patches of the first WHITEN_IMAGES images of subsets[k].

        train_x : (n_train, C, H, W) fp32; subsets : (K, n). The covariance is summed in float64 and
        diagonalised on the CPU, one model at a time, and each eigenvector's sign is fixed (its largest entry
        positive), so model k's filters do not depend on the other models of its batch.
        """
        if not self.whiten:
            return
        C = train_x.shape[1]
        filters = []
        for k in range(self.K):
            x = train_x[subsets[k, :self.WHITEN_IMAGES]].double()
            patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, C * 4)
            cov = (patches.T @ patches / len(patches)).cpu()
            values, vectors = torch.linalg.eigh(cov)
            values, vectors = values.flip(0), vectors.flip(1).T  # largest first, one eigenvector a row
            sign = torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))
            scaled = (vectors * sign / torch.sqrt(values.clamp_min(0) + eps)[:, None]).reshape(C * 4, C, 2, 2)
            filters.append(torch.cat([scaled, -scaled]))
        self.whiten_conv.weight.copy_(torch.cat(filters).to(self.whiten_conv.weight))

    def bias_params(self) -> list[nn.Parameter]:
        """BatchNorm biases, which airbench trains at bias_lr_scale times the learning rate."""
        return [m.bias for m in self.modules() if isinstance(m, nn.BatchNorm2d)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally max-pooled activations, shape (K, B, c3)."""
        K, B = x.shape[:2]
        stacked = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
        out = self.groups(F.gelu(self.whiten_conv(stacked)))
        return F.adaptive_max_pool2d(out, 1).reshape(B, K, self.c3).transpose(0, 1)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return torch.bmm(features, self.fc) * self.OUT_SCALE

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
    # airbench94's recipe (KellerJordan/cifar10-airbench), our schedule's shape: 10 epochs (airbench: 9.9), batch
    # 1024, Nesterov momentum 0.85, label smoothing 0.2, flip + 2-pixel translation (no cutout), BatchNorm biases
    # at 64x the learning rate (and 1/64 the weight decay). lr and weight_decay are airbench's decoupled 11.5 and
    # 0.0153 (per 1024 examples, summed loss) for our per-model mean loss: lr = 11.5 / (1 + 1 / (1 - 0.85)) = 1.5,
    # and lr * weight_decay = 0.0153 / (1 + 1 / (1 - 0.85)), so weight_decay = 0.0153 / 11.5. Not taken from
    # airbench: its lookahead/EMA, its test-time augmentation (margins stay one plain forward pass), freezing the
    # whitening bias after 3 epochs, and its schedule's non-zero ends (ours rises from 0 and decays to 0).
    "airbench": dict(width=1.0, epochs=10, batch_size=1024, lr=1.5, momentum=0.85, weight_decay=0.0153 / 11.5,
                     peak_epoch_frac=0.23, augment=True, translate=2, cutout=0, label_smoothing=0.2,
                     bias_lr_scale=64.0, whiten=True),
}

def default_arch(dataset_name: str, image_shape: tuple[int, int, int], device: torch.device) -> str:
    """The MLP for tiny images (digits, 8x8); for images up to 32x32 the small CNN on a CPU (ResNet-9 costs
    ~130 s per model there) and ResNet-9 on a GPU; ResNet-9 for anything larger."""
    pixels = image_shape[0] * image_shape[1]
    if dataset_name == "digits" or pixels <= 16 * 16:
        return "mlp"
    return "cnn" if pixels <= 32 * 32 and device.type == "cpu" else "resnet9"


def check_image_shape(arch: str, image_shape: tuple[int, int, int]) -> None:
    """Refuse, before any training, images too small for an architecture's pooling stages (airbench: three)."""
    H, W, _ = image_shape
    if arch == "airbench" and min(H, W) < 16:
        raise ValueError(f"--arch airbench needs images of at least 16x16 (three pooling stages), not {H}x{W}: "
                         "use --arch mlp or cnn")


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
    if arch == "airbench":
        check_image_shape(arch, image_shape)
        return BatchedAirbench(K, C, n_classes, generators, width=float(hparams["width"]), whiten=bool(hparams["whiten"]))
    raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(DEFAULT_HPARAMS)}")
