"""LPRNet in PyTorch, built as NVIDIA TAO builds it (shared/docs/lprnet.md section 1.5).

    input [N,3,48,96] in [0,1] -> sum of channels -> conv1 3x3 64 + BN + ReLU -> 3x3 max-pool (stride 1)
    -> residual stages 2..5 (64, 128 s2, 256 s2, 300; "a" blocks have a 1x1 projection; baseline18 adds
    the "b" blocks) -> permute to (W, H, C) -> reshape [T=24, H*C] -> LSTM(hidden_units) -> Dense(n_class+1)

`width` scales the stage channels (1.0 = NVIDIA's 64/128/256/300) to make slimmer variants for a CPU;
width 1.0 with nlayers 18 and hidden_units 512 is NVIDIA's baseline18.
"""
from dataclasses import dataclass

import torch
from torch import nn

STAGE_CHANNELS = (64, 128, 256, 300)
STAGE_STRIDES = (1, 2, 2, 1)
INPUT_HEIGHT, INPUT_WIDTH = 48, 96
BN_EPS = 1e-4
BN_MOMENTUM = 0.003  # Keras momentum 0.997 expressed as PyTorch's update fraction


@dataclass
class LPRNetConfig:
    n_chars: int
    nlayers: int = 18
    hidden_units: int = 512
    width: float = 1.0

    def channels(self):
        return tuple(max(8, int(round(c * self.width))) for c in STAGE_CHANNELS)


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip; a 1x1 projection when shape changes (NVIDIA's "a" blocks)."""

    def __init__(self, cin, cout, stride, project):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.project = None
        if project:
            self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        skip = x if self.project is None else self.project(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + skip)


class LPRNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.nlayers not in (10, 18):
            raise ValueError("nlayers must be 10 or 18, got %r" % config.nlayers)
        self.config = config
        chans = config.channels()
        self.stem = nn.Sequential(
            nn.Conv2d(1, chans[0], 3, 1, 1, bias=False), _bn(chans[0]), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 1, 1),
        )
        blocks = []
        cin = chans[0]
        for cout, stride in zip(chans, STAGE_STRIDES):
            blocks.append(ResidualBlock(cin, cout, stride, project=True))
            if config.nlayers == 18:
                blocks.append(ResidualBlock(cout, cout, 1, project=False))
            cin = cout
        self.stages = nn.Sequential(*blocks)
        feat_h = INPUT_HEIGHT // 4
        self.lstm = nn.LSTM(feat_h * chans[-1], config.hidden_units, batch_first=True)
        self.td_dense = nn.Linear(config.hidden_units, config.n_chars + 1)

    @property
    def timesteps(self):
        return INPUT_WIDTH // 4

    def forward(self, images):
        """images [N,3,48,96] in [0,1] -> logits [N, T, n_chars+1] (blank is the last class)."""
        x = images.sum(dim=1, keepdim=True)
        x = self.stages(self.stem(x))  # N, C, 12, 24
        n, c, h, w = x.shape
        x = x.permute(0, 3, 2, 1).reshape(n, w, h * c)  # (W, H, C) as in TAO
        x, _ = self.lstm(x)
        return self.td_dense(x)


class DeployableLPRNet(nn.Module):
    """The deployable I/O: `tf_op_layer_ArgMax` (class per timestep), `tf_op_layer_Max` (its probability),
    plus `class_probs` (every class's probability per timestep, [N, T, n_chars+1]), which NVIDIA's files lack:
    with it the recognizer can re-decode a read that does not fit the region's plate format."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, image_input):
        prob = torch.softmax(self.net(image_input), dim=-1)
        best, ids = prob.max(dim=-1)
        return ids, best, prob


def count_macs(config):
    """Multiply-accumulates per plate: convolutions plus the LSTM and dense head."""
    chans = config.channels()
    h, w = INPUT_HEIGHT, INPUT_WIDTH
    macs = 9 * chans[0] * h * w
    cin = chans[0]
    for cout, stride in zip(chans, STAGE_STRIDES):
        h, w = h // stride, w // stride
        macs += (9 * cin * cout + 9 * cout * cout + cin * cout) * h * w
        if config.nlayers == 18:
            macs += 18 * cout * cout * h * w
        cin = cout
    feat = (INPUT_HEIGHT // 4) * chans[-1]
    hidden = config.hidden_units
    macs += (INPUT_WIDTH // 4) * (4 * hidden * (feat + hidden) + hidden * (config.n_chars + 1))
    return macs
