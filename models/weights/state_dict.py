"""PyTorch-layout state dicts (`.npz`, `.pth` / `.pt` / `.t7`) and their assignment to Keras variables.

A state dict is a flat mapping from names ("layer1.0.conv1.weight") to arrays. Each backbone says
which name goes to which Keras variable and how the array is laid out (`targets`); the assignment
checks that the file and the backbone agree completely before it writes anything.
"""

import re
from pathlib import Path

import numpy as np

from models.errors import ModelConfigError

TORCH_SUFFIXES = (".pth", ".pt", ".t7")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "state")


def torch_conv_kernel(array):
    """PyTorch conv weight (out, in, kh, kw) -> Keras kernel (kh, kw, in, out)."""
    return np.transpose(array, (2, 3, 1, 0))


def torch_linear_kernel(array):
    """PyTorch linear weight (out, in) -> Keras Dense kernel (in, out)."""
    return np.transpose(array)


def identity(array):
    """Arrays already in Keras layout (biases, BatchNorm vectors, Keras-2 kernels)."""
    return array


def conv_targets(key, conv):
    """Targets of a bias-free PyTorch convolution `key` ("layer1.0.conv1.weight") -> Keras Conv2D."""
    return {key: (conv.kernel, torch_conv_kernel)}


def batch_norm_targets(prefix, bn):
    """Targets of a PyTorch BatchNorm2d called `prefix` ("layer1.0.bn1") -> Keras BatchNormalization."""
    return {
        f"{prefix}.weight": (bn.gamma, identity),
        f"{prefix}.bias": (bn.beta, identity),
        f"{prefix}.running_mean": (bn.moving_mean, identity),
        f"{prefix}.running_var": (bn.moving_variance, identity),
    }


def dense_targets(prefix, dense):
    """Targets of a PyTorch Linear called `prefix` ("linear") -> Keras Dense."""
    return {f"{prefix}.weight": (dense.kernel, torch_linear_kernel), f"{prefix}.bias": (dense.bias, identity)}


def _clean(state, label):
    cleaned = {}
    for key, value in state.items():
        key = str(key)
        if key.startswith("module."):
            key = key[len("module.") :]
        if key.endswith("num_batches_tracked"):
            continue
        cleaned[key] = np.asarray(value)
    if not cleaned:
        raise ModelConfigError(f"{label} holds no arrays: pass a state dict saved from the backbone")
    return cleaned


def read_npz_state_dict(path):
    """Arrays of a `.npz` file holding a PyTorch state dict, by name."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise ModelConfigError(f"{path.name} is not a readable .npz file ({first_line(error)})") from None
    return _clean(state, path.name)


def read_torch_state_dict(path):
    """Arrays of a PyTorch `.pth` / `.pt` / `.t7` file holding a state dict, by name.

    Needs PyTorch (not a requirement of this project). Only plain state dicts are read
    (`torch.load(weights_only=True)`); a checkpoint that pickles whole modules (as SpotTune's
    `torch.save({'net': net})` does) must be re-saved as `torch.save(net.state_dict(), path)`.
    Wrappers such as {"state_dict": ...} or {"net": state_dict} are unwrapped.
    """
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise ModelConfigError(
            f"reading {path.name} needs PyTorch, which is not installed: pip install torch, or convert it "
            f"once with numpy.savez('{path.stem}.npz', **{{k: v.numpy() for k, v in state_dict.items()}}) "
            "and pass the .npz"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, runtime and zip errors alike
        raise ModelConfigError(
            f"{path.name} could not be read as a PyTorch state dict ({first_line(error)}); re-save it with "
            "torch.save(net.state_dict(), PATH)"
        ) from None
    for _ in range(2):
        if isinstance(state, dict):
            wrapped = [k for k in _WRAPPER_KEYS if isinstance(state.get(k), dict)]
            if wrapped:
                state = state[wrapped[0]]
    if not isinstance(state, dict):
        raise ModelConfigError(
            f"{path.name} holds a {type(state).__name__}, not a state dict: re-save it with "
            "torch.save(net.state_dict(), PATH)"
        )
    arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return _clean(arrays, path.name)


def read_state_dict(path):
    """Reads a `.npz` or PyTorch state dict, chosen by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        return read_npz_state_dict(path)
    if suffix in TORCH_SUFFIXES:
        return read_torch_state_dict(path)
    raise ModelConfigError(f"{Path(path).name} is not a state dict file (.npz, .pth, .pt, .t7)")


def _examples(keys, count=2):
    keys = sorted(keys)
    shown = ", ".join(keys[:count])
    return shown + (", ..." if len(keys) > count else "")


_MODULE = re.compile(r"^([A-Za-z_]\w*(?:\.\d+)+)\.")


def _summary(keys):
    """Example names, or the numbered modules they belong to ("layer1.3") when all have one."""
    modules = [_MODULE.match(k) for k in keys]
    if modules and all(modules):
        names = {m[1] for m in modules}
        return f"{len(names)} modules: {_examples(names, 3)}"
    return _examples(keys)


def first_line(error):
    """The first line of an exception message (Keras and torch errors span many lines)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_state_dict(state, targets, label, backbone_name, ignore_prefixes=()):
    """The one-line description of how `state` and `targets` disagree, or None when they agree."""
    ignored = {k for k in state if k.startswith(tuple(ignore_prefixes))} if ignore_prefixes else set()
    unused = set(state) - set(targets) - ignored
    missing = set(targets) - set(state)
    wrong = []
    for key in sorted(set(targets) & set(state)):
        variable, transform = targets[key]
        shape = tuple(transform(state[key]).shape)
        if shape != tuple(variable.shape):
            wrong.append(f"{key} {tuple(state[key].shape)} vs {tuple(variable.shape)}")
    if not (unused or missing or wrong):
        return None
    problems = []
    if unused:
        problems.append(f"{len(unused)} of its {len(state)} arrays unused ({_summary(unused)})")
    if missing:
        problems.append(f"{len(missing)} of the {len(targets)} arrays it needs missing ({_summary(missing)})")
    if wrong:
        problems.append(f"{len(wrong)} with the wrong shape ({'; '.join(wrong[:2])}{', ...' if len(wrong) > 2 else ''})")
    return (
        f"{label} does not match {backbone_name}: " + ", ".join(problems) + f"; pass the weights of {backbone_name}"
    )


def assign_state_dict(state, targets, label, backbone_name, ignore_prefixes=()):
    """Writes every array of `state` into its Keras variable, after checking that all of them match.

    Args:
        state: name -> array, in the file's layout.
        targets: name -> (Keras variable, layout transform) for every array the backbone needs.
        label: the file's name, for messages.
        backbone_name: the backbone's registry name, for messages.
        ignore_prefixes: names starting with these are allowed to be left unused.

    Raises:
        ModelConfigError: (one line) arrays unused, missing, or of the wrong shape; nothing is
            assigned then.
    """
    problem = check_state_dict(state, targets, label, backbone_name, ignore_prefixes)
    if problem:
        raise ModelConfigError(problem)
    for key, (variable, transform) in targets.items():
        variable.assign(transform(state[key]).astype(variable.dtype))
