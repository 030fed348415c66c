"""The detector network: a plain stride-16 CNN (3x3 convolutions, batch norm, ReLU, residual blocks,
dilated at the last stage so a cell sees a close-up plate whole), built from scratch: no pretrained
weights, no torchvision. Two 1x1 heads: coverage (a logit; the exported graph applies the sigmoid) and
the four DetectNet_v2 bbox planes."""
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class DetectorConfig:
    input_width: int = 512
    input_height: int = 288
    channels: list = field(default_factory=lambda: [16, 32, 64, 96])  # stride 2, 4, 8, 16
    blocks: list = field(default_factory=lambda: [0, 0, 1, 3])  # residual blocks per stage
    dilations: list = field(default_factory=lambda: [1, 2, 4])  # of the last stage's blocks, cycled

    def to_dict(self):
        return asdict(self)


def conv_bn(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c, dilation=1):
        super().__init__()
        self.a = conv_bn(c, c, dilation=dilation)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, padding=dilation, dilation=dilation, bias=False),
                               nn.BatchNorm2d(c))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(x + self.b(self.a(x)))


class PlateDetector(nn.Module):
    STRIDE = 16

    def __init__(self, config=None):
        super().__init__()
        self.config = config or DetectorConfig()
        layers, cin = [], 3
        for stage, (cout, nblocks) in enumerate(zip(self.config.channels, self.config.blocks)):
            layers.append(conv_bn(cin, cout, stride=2))
            for b in range(nblocks):
                dil = self.config.dilations[b % len(self.config.dilations)] if stage == 3 else 1
                layers.append(Residual(cout, dil))
            cin = cout
        self.backbone = nn.Sequential(*layers)
        self.cov = nn.Conv2d(cin, 1, 1)
        self.bbox = nn.Conv2d(cin, 4, 1)
        nn.init.constant_(self.cov.bias, -4.6)  # coverage prior 0.01: few cells hold a plate
        nn.init.normal_(self.cov.weight, std=0.01)
        nn.init.constant_(self.bbox.bias, 0.5)  # ~17 px from the cell to each side
        nn.init.normal_(self.bbox.weight, std=0.01)

    def forward(self, x):
        """x [N,3,H,W] RGB in 0..1 -> (coverage logits [N,1,H/16,W/16], bbox [N,4,H/16,W/16])."""
        f = self.backbone(x)
        return self.cov(f), self.bbox(f)


class DeployableDetector(nn.Module):
    """The exported graph: the DetectNet_v2 contract's two outputs (coverage through a sigmoid)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        cov, bbox = self.model(x)
        return torch.sigmoid(cov), bbox


def count_macs(config):
    """MACs per frame at the config's input size (convolutions; heads included)."""
    model = PlateDetector(config).eval()
    total = [0]

    def hook(mod, inp, out):
        total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, config.input_height, config.input_width))
    for h in handles:
        h.remove()
    return total[0]
