"""Reference outputs of the SpotTune authors' PyTorch ResNet-26, made once and checked in, so CI compares
adaptune's ResNet-26 with the authors' network without PyTorch.

The weights are not stored: `state_dict(seed)` makes them from a seed (NumPy only), in the authors'
state-dict layout (`spottune_models.py`, policy=None), and `images(seed)` the input. The fixture
`resnet26_authors.npz` holds the authors' network's logits for them.

Made with (PyTorch needed only here; any environment with torch and numpy):

    python -m tests.reference.resnet26_authors state /tmp/resnet26_state.npz     # the project's environment
    TORCH_PYTHON -m tests.reference.resnet26_authors logits /tmp/resnet26_state.npz tests/reference/resnet26_authors.npz

(the first step needs only adaptune's environment, the second only torch and numpy).
"""

import sys

import numpy as np

NUM_CLASSES = 5
FIXTURE = __file__.replace(".py", ".npz")
WIDTHS = (64, 128, 256)


def state_keys_and_shapes():
    """[(key, shape)] of the authors' ResNet-26 state dict (PyTorch layouts), without num_batches_tracked."""
    entries = []

    def bn(prefix, channels):
        entries.extend((f"{prefix}.{name}", (channels,)) for name in ("weight", "bias", "running_mean", "running_var"))

    entries.append(("conv1.weight", (32, 3, 3, 3)))
    bn("bn1", 32)
    cin = 32
    for s, width in enumerate(WIDTHS):
        for b in range(4):
            entries.append((f"blocks.{s}.{b}.conv1.weight", (width, cin if b == 0 else width, 3, 3)))
            bn(f"blocks.{s}.{b}.bn1", width)
            entries.append((f"blocks.{s}.{b}.conv2.1.weight", (width, width, 3, 3)))
            bn(f"blocks.{s}.{b}.bn2", width)
        cin = width
    bn("bn2.0", 256)
    entries += [("linear.weight", (NUM_CLASSES, 256)), ("linear.bias", (NUM_CLASSES,))]
    return entries


def state_dict(seed=0):
    """{key: float32 array}: He-normal convolutions, non-trivial BatchNorm parameters and statistics."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in state_keys_and_shapes():
        if key.endswith("conv1.weight") or key.endswith("conv2.1.weight"):
            value = rng.normal(scale=np.sqrt(2.0 / (9 * shape[0])), size=shape)
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("running_mean"):
            value = rng.normal(scale=0.2, size=shape)
        elif key.endswith(".weight") and len(shape) == 1:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(scale=0.1, size=shape)
        state[key] = value.astype("float32")
    return state


def images(seed=0):
    """Two 72 x 72 RGB images, NHWC float32 (normalised values: the network sees them as they are)."""
    return np.random.default_rng(seed + 100).normal(size=(2, 72, 72, 3)).astype("float32")


def authors_logits(state, inputs):
    """The SpotTune authors' ResNet-26 (policy=None) in PyTorch, loaded with `state`, on NHWC `inputs`."""
    import torch

    nn, functional = torch.nn, torch.nn.functional

    def conv3x3(cin, cout, stride=1):
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Sequential(nn.ReLU(), conv3x3(cout, cout)), nn.BatchNorm2d(cout)

        def forward(self, x):
            return self.bn2(self.conv2(functional.relu(self.bn1(self.conv1(x)))))

    class Net(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv1, self.bn1 = conv3x3(3, 32), nn.BatchNorm2d(32)
            cin, stages = 32, []
            for width in WIDTHS:
                stages.append(nn.ModuleList([Block(cin if b == 0 else width, width, 2 if b == 0 else 1) for b in range(4)]))
                cin = width
            self.blocks = nn.ModuleList(stages)
            self.bn2 = nn.Sequential(nn.BatchNorm2d(256), nn.ReLU())
            self.linear = nn.Linear(256, num_classes)

        def forward(self, x):
            x = self.bn1(self.conv1(x))
            for stage in self.blocks:
                for b, block in enumerate(stage):
                    residual = x
                    if b == 0:
                        residual = functional.avg_pool2d(x, 2)
                        residual = torch.cat((residual, residual * 0), 1)
                    x = functional.relu(residual + block(x))
            x = self.bn2(x).mean(dim=(2, 3))
            return self.linear(x)

    net = Net(NUM_CLASSES)
    missing, unexpected = net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(inputs.transpose(0, 3, 1, 2))).numpy(), torch.__version__


def main(argv):
    if argv[:1] == ["state"]:
        np.savez(argv[1], **state_dict())
    elif argv[:1] == ["logits"]:
        with np.load(argv[1]) as data:
            state = {key: data[key] for key in data.files}
        logits, version = authors_logits(state, images())
        np.savez(argv[2], logits=logits.astype("float32"), seed=np.int64(0), torch_version=np.array(version))
        print(logits)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
