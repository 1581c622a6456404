"""torchvision backbones cut into depth *units*, with torchvision's own parameter names.

A :class:`Backbone` is an ``nn.Sequential`` of the torchvision model's feature layers, without its
classifier, so that ``backbone.state_dict()`` keys are exactly torchvision's (``conv1.weight``,
``layer1.0.bn1.running_mean``, ``features.denseblock1.denselayer1.conv1.weight``,
``features.0.weight``): a plain torchvision model loads them with ``strict=False`` (only the
classifier is missing). ``forward`` returns globally average-pooled features.

Every backbone is described as an ordered list of :class:`UnitSpec`: the smallest pieces that
are frozen, trained or dropped as a whole (see :mod:`ssl_ft.models.depth`):

* ResNet (He et al., CVPR 2016): the stem (``conv1 bn1 relu maxpool``), then every residual block.
* DenseNet (Huang et al., CVPR 2017): the stem (``conv0 norm0 relu0 pool0``), every dense layer,
  every transition, and the final ``norm5`` (+ ReLU).
  The transitions' 2x2 average pools use ``ceil_mode`` so that 28 px inputs work with the
  standard stem; on inputs whose maps stay even (64, 128, 224 px) nothing changes.
* VGG (Simonyan & Zisserman, ICLR 2015): every convolution with its ReLU (and BatchNorm in the
  ``_bn`` variants) and the max-pool that follows it. The final max-pool is removed: global
  average pooling follows it anyway, and at 28 px it would pool a 1x1 map.

Options:

* ``in_chans``: 1 (grayscale, native) or 3. ImageNet weights are adapted to one channel by
  summing the first convolution over RGB (timm's ``adapt_input_conv``).
* ``stem="lowres"`` for 28-64 px inputs: ResNet/DenseNet get a 3x3 stride-1 first convolution and
  no max-pool (as in CIFAR-style ResNets); VGG loses its first max-pool. About 8x slower than the
  standard stem at 28 px on a CPU; the ImageNet weights of a replaced 7x7 convolution are dropped.
* ``stem="midres"``, in between: the 3x3 stride-1 first convolution but the max-pool kept, so the
  stem halves the image instead of quartering it (14x14 maps after it at 28 px, against 7x7 for
  ``standard`` and 28x28 for ``lowres``). VGG has no strided stem convolution: ``midres`` is its
  ``standard``. Measured per size in ``benchmarks/bench_stems.py`` (docs/pretraining.md).
* ``weights``: ``"none"`` (random init), ``"imagenet"`` (torchvision's DEFAULT weights, downloaded
  by torchvision to ``$TORCH_HOME/hub/checkpoints`` on first use), or a path to a checkpoint or
  state dict (any prefix, see :func:`ssl_ft.checkpoint.match_state_dict`).
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from ssl_ft.errors import UserError
from ssl_ft.models.contract import DepthBackbone, UnitSpec

__all__ = [
    "ARCHS", "MIN_IMAGE_SIZE", "STEMS", "Backbone", "UnitSpec", "create_backbone", "family_of", "list_archs",
    "check_input_size", "load_backbone_weights", "torchvision_model",
]

ARCHS: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "resnet101": "resnet",
    "densenet121": "densenet",
    "densenet169": "densenet",
    "vgg11": "vgg",
    "vgg13": "vgg",
    "vgg16": "vgg",
    "vgg19": "vgg",
    "vgg11_bn": "vgg",
    "vgg13_bn": "vgg",
    "vgg16_bn": "vgg",
    "vgg19_bn": "vgg",
}
STEMS = ("standard", "midres", "lowres")
#: The smallest image side that training, probes and fusion accept (``data.size=1`` is refused).
MIN_IMAGE_SIZE = 8


def list_archs() -> list[str]:
    """Names accepted by :func:`create_backbone`."""
    return sorted(ARCHS)


def family_of(arch: str) -> str:
    """``resnet``, ``densenet``, ``vgg`` or ``timm`` (``timm:<name>``); a :class:`UserError`
    names an unknown ``arch``."""
    if arch.startswith("timm:"):
        return "timm"
    try:
        return ARCHS[arch]
    except KeyError:
        raise UserError(f"unknown arch {arch!r}; choose one of {', '.join(list_archs())} "
                        "or timm:<name>") from None


class Backbone(nn.Sequential):
    """Feature layers of a torchvision model, named as in torchvision, plus its unit list; it
    meets :class:`~ssl_ft.models.SplittableBackbone` (the backbone contract).

    ``forward_features(x)`` returns the feature map after the last kept unit; ``forward(x)``
    returns it globally average-pooled, shape ``(N, num_features)``.
    """

    def __init__(
        self,
        layers: OrderedDict[str, nn.Module],
        *,
        arch: str,
        in_chans: int,
        stem: str,
        units: list[UnitSpec],
    ) -> None:
        super().__init__(layers)
        self.arch = arch
        self.family = family_of(arch)
        self.in_chans = in_chans
        self.stem_type = stem
        self.units: list[UnitSpec] = list(units)

    def __getitem__(self, idx: slice | int) -> nn.Module:  # type: ignore[override]
        if isinstance(idx, slice):  # a slice is a plain Sequential (no unit list to carry)
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)

    @property
    def num_features(self) -> int:
        """Channels of the pooled output (the last kept unit's output channels)."""
        return self.units[-1].out_channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map after the last kept unit."""
        for module in self:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)

    def forward_intermediates(
        self, x: torch.Tensor, indices: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Feature maps after the units numbered ``indices`` (0-based; default: every unit).

        The name follows timm's features API. Runs only as deep as the deepest index.
        """
        wanted = sorted(set(range(len(self.units)) if indices is None else indices))
        if wanted and not 0 <= wanted[0] <= wanted[-1] < len(self.units):
            raise ValueError(f"unit indices {list(indices or [])} outside 0..{len(self.units) - 1}")
        outputs: list[torch.Tensor] = []
        start = 0
        for i in wanted:
            x = self.forward_units(x, start, i + 1)
            outputs.append(x)
            start = i + 1
        return outputs

    def forward_units(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run units ``start .. stop-1`` on ``x`` (the output of unit ``start - 1``).

        Lets a caller run a frozen prefix under ``torch.no_grad()`` and the rest with autograd.
        Inside a DenseNet block the running concatenation is the state, so a split anywhere is
        exact.
        """
        stop = len(self.units) if stop is None else stop
        dense: list[torch.Tensor] | None = None  # DenseNet: features concatenated inside a block
        for unit in self.units[start:stop]:
            if ".denselayer" in unit.modules[0]:
                dense = [x] if dense is None else dense
                dense.append(self.get_submodule(unit.modules[0])(dense))
                x = torch.cat(dense, 1)
            else:
                dense = None
                for path in unit.modules:
                    x = self.get_submodule(path)(x)
        return x

    def unit_parameters(self, unit: UnitSpec) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` pairs of one unit, names relative to the backbone."""
        out: list[tuple[str, nn.Parameter]] = []
        for path in unit.modules:
            module = self.get_submodule(path)
            out.extend((f"{path}.{n}", p) for n, p in module.named_parameters())
        return out

    def unit_modules(self, unit: UnitSpec) -> list[nn.Module]:
        """The modules that make one unit."""
        return [self.get_submodule(path) for path in unit.modules]

    def truncate(self, keep: int) -> Backbone:
        """Drop every unit after the first ``keep`` (in place): their modules leave the model."""
        if not 1 <= keep <= len(self.units):
            raise ValueError(f"keep must be in [1, {len(self.units)}], got {keep}")
        for unit in self.units[keep:]:
            for path in unit.modules:
                _delete_submodule(self, path)
        self.units = self.units[:keep]
        # containers left empty (e.g. a whole ResNet stage) go too
        for name, module in list(self.named_modules())[::-1]:
            if name and isinstance(module, nn.Sequential | nn.ModuleDict) and len(module) == 0:
                _delete_submodule(self, name)
        return self


def check_input_size(backbone: DepthBackbone, image_size: int) -> None:
    """Raise :class:`UserError` if ``image_size`` is too small for ``backbone``'s pooling, or
    smaller than :data:`MIN_IMAGE_SIZE` (a 1-7 px image runs through any backbone, on padding)."""
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"image size {image_size} px is too small to learn from (at least "
                        f"{MIN_IMAGE_SIZE} px per side; MedMNIST's smallest is 28)")
    probe = torch.zeros(1, backbone.in_chans, image_size, image_size)
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(probe)
    except RuntimeError as exc:
        raise UserError(
            f"image size {image_size} px is too small for {backbone.arch} with stem "
            f"{backbone.stem_type!r} ({str(exc).splitlines()[0]}); use stem 'lowres' or larger images"
        ) from None
    finally:
        backbone.train(was_training)


def _delete_submodule(root: nn.Module, path: str) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    del parent._modules[name]


def _conv_like(conv: nn.Conv2d, in_chans: int, *, lowres: bool) -> nn.Conv2d:
    """A first convolution with ``in_chans`` inputs; 3x3 stride 1 when ``lowres``."""
    if lowres:
        return nn.Conv2d(in_chans, conv.out_channels, 3, 1, 1, bias=conv.bias is not None)
    return nn.Conv2d(
        in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        bias=conv.bias is not None,
    )


def _adapt_first_conv(old: nn.Conv2d, in_chans: int, lowres: bool, pretrained: bool) -> nn.Conv2d:
    """Replace a first convolution; keep (channel-adapted) pretrained weights when shapes allow."""
    if in_chans == old.in_channels and not lowres:
        return old
    new = _conv_like(old, in_chans, lowres=lowres)
    if pretrained:
        if new.kernel_size == old.kernel_size:
            from timm.models import adapt_input_conv

            with torch.no_grad():
                new.weight.copy_(adapt_input_conv(in_chans, old.weight.detach().clone()))
                if old.bias is not None:
                    new.bias.copy_(old.bias)
        else:
            warnings.warn(
                f"stem 'lowres' replaces the {old.kernel_size} first convolution by a 3x3 one; "
                "its ImageNet weights are not used (random init)",
                stacklevel=3,
            )
    return new


def _resnet(model: torchvision.models.ResNet, arch: str, in_chans: int, stem: str,
            pretrained: bool) -> Backbone:
    small = stem in ("lowres", "midres")
    model.conv1 = _adapt_first_conv(model.conv1, in_chans, small, pretrained)
    if stem == "lowres":
        model.maxpool = nn.Identity()
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool)
    units = [UnitSpec("stem", ("conv1", "bn1", "relu", "maxpool"), 1, model.bn1.num_features)]
    for stage in range(1, 5):
        stage_seq: nn.Sequential = getattr(model, f"layer{stage}")
        layers[f"layer{stage}"] = stage_seq
        for j, block in enumerate(stage_seq):
            last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
            units.append(UnitSpec(f"layer{stage}.{j}", (f"layer{stage}.{j}",), stage,
                                  last_bn.num_features))
    return Backbone(layers, arch=arch, in_chans=in_chans, stem=stem, units=units)


def _densenet(model: torchvision.models.DenseNet, arch: str, in_chans: int, stem: str,
              pretrained: bool) -> Backbone:
    small = stem in ("lowres", "midres")
    f = model.features
    f.conv0 = _adapt_first_conv(f.conv0, in_chans, small, pretrained)
    if stem == "lowres":
        f.pool0 = nn.Identity()
    f.add_module("relu5", nn.ReLU(inplace=False))  # torchvision applies F.relu after norm5
    for stage in range(1, 4):  # 28 px inputs reach a 1x1 map before transition3 (see docstring)
        getattr(f, f"transition{stage}").pool.ceil_mode = True
    units = [UnitSpec("stem", ("features.conv0", "features.norm0", "features.relu0",
                               "features.pool0"), 1, f.norm0.num_features)]
    channels = f.norm0.num_features
    for stage in range(1, 5):
        block = getattr(f, f"denseblock{stage}")
        for name, layer in block.items():
            channels += layer.conv2.out_channels
            units.append(UnitSpec(f"denseblock{stage}.{name}",
                                  (f"features.denseblock{stage}.{name}",), stage, channels))
        if stage < 4:
            trans = getattr(f, f"transition{stage}")
            channels = trans.conv.out_channels
            units.append(UnitSpec(f"transition{stage}", (f"features.transition{stage}",), stage,
                                  channels))
    units.append(UnitSpec("norm5", ("features.norm5", "features.relu5"), 4, channels))
    return Backbone(OrderedDict(features=f), arch=arch, in_chans=in_chans, stem=stem, units=units)


class _VGGFeatures(nn.Module):
    """Just ``features`` of a torchvision VGG: skips building (and initialising) the 120M
    parameter classifier that the backbone drops anyway."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features


def _vgg_features_only(arch: str) -> _VGGFeatures:
    from torchvision.models.vgg import cfgs, make_layers

    cfg = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}[arch.removesuffix("_bn")]
    features = make_layers(cfgs[cfg], batch_norm=arch.endswith("_bn"))
    for m in features.modules():  # the same initialisation as torchvision.models.VGG
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return _VGGFeatures(features)


def _vgg(model: torchvision.models.VGG | _VGGFeatures, arch: str, in_chans: int, stem: str,
         pretrained: bool) -> Backbone:
    f = model.features
    first = f[0]
    assert isinstance(first, nn.Conv2d)
    f[0] = _adapt_first_conv(first, in_chans, False, pretrained)
    pools = [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)]
    del f._modules[str(pools[-1])]  # global pooling follows; see module docstring
    if stem == "lowres":
        del f._modules[str(pools[0])]
    units: list[UnitSpec] = []
    current: list[str] = []
    stage, channels, n_conv = 1, 0, 0
    for key, module in f._modules.items():
        if isinstance(module, nn.Conv2d):
            if current:
                units.append(UnitSpec(f"conv{n_conv}", tuple(current), stage, channels))
            n_conv += 1
            current, channels = [], module.out_channels
            stage = 1 + sum(p < int(key) for p in pools)
        current.append(f"features.{key}")
    units.append(UnitSpec(f"conv{n_conv}", tuple(current), stage, channels))
    return Backbone(OrderedDict(features=f), arch=arch, in_chans=in_chans, stem=stem, units=units)


_BUILDERS = {"resnet": _resnet, "densenet": _densenet, "vgg": _vgg}


def create_backbone(
    arch: str,
    *,
    in_chans: int = 3,
    stem: str = "standard",
    weights: str | os.PathLike = "none",
) -> Backbone:
    """Build a torchvision backbone as a :class:`Backbone`.

    Example::

        >>> bb = create_backbone("resnet18", in_chans=1, stem="lowres")
        >>> bb(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 512])
    """
    family = family_of(arch)
    if in_chans not in (1, 3):
        raise UserError(f"in_chans must be 1 or 3, got {in_chans!r}")
    if stem not in STEMS:
        raise UserError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    weights_str = str(weights)
    if family == "timm":
        from ssl_ft.models.timm_adapter import create_timm_backbone

        backbone = create_timm_backbone(arch.removeprefix("timm:"), in_chans=in_chans, stem=stem,
                                        weights=weights_str)
        if weights_str not in ("none", "imagenet"):
            load_backbone_weights(backbone, weights_str)
        return backbone
    if weights_str == "imagenet":
        # torchvision's real loading path: downloads once into $TORCH_HOME/hub/checkpoints.
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    elif family == "vgg":
        model = _vgg_features_only(arch)
    else:
        model = torchvision.models.get_model(arch, weights=None)
    backbone = _BUILDERS[family](model, arch, in_chans, stem, weights_str == "imagenet")
    if weights_str not in ("none", "imagenet"):
        load_backbone_weights(backbone, weights_str)
    return backbone


def torchvision_model(checkpoint: str | os.PathLike, num_classes: int = 1000) -> nn.Module:
    """A plain torchvision model (``torchvision.models.<arch>``) with a checkpoint's backbone.

    The first convolution (input channels, ``lowres`` stem) is shaped as the checkpoint says;
    the classifier (``fc`` / ``classifier``) is new, with ``num_classes`` outputs. Example::

        >>> model = torchvision_model("runs/simclr/checkpoint.pt", num_classes=2)
        >>> model(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 2])
    """
    from ssl_ft.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    arch, meta = ckpt.meta["arch"], ckpt.meta
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    _BUILDERS[family_of(arch)](model, arch, int(meta["in_chans"]), meta["stem"], False)
    if family_of(arch) == "densenet":
        del model.features.relu5  # torchvision's forward applies this ReLU itself
    missing, unexpected = model.load_state_dict(ckpt.backbone, strict=False)
    if unexpected or any(not k.startswith(("fc.", "classifier.")) for k in missing):
        raise UserError(f"checkpoint {checkpoint} does not fit torchvision's {arch}: "
                        f"unexpected {unexpected[:2]}, missing {missing[:2]}")
    return model


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Load weights from an ssl_ft checkpoint or any state dict file into ``backbone``.

    Prefixes (``module.``, ``backbone.``, ...) are resolved by
    :func:`ssl_ft.checkpoint.match_state_dict`; classifier weights are ignored. An ssl_ft
    checkpoint whose arch, stem or input channels differ from ``backbone`` is refused.
    """
    from ssl_ft.checkpoint import match_state_dict, read_state_dict

    path = Path(path)
    state, meta = read_state_dict(path)
    if meta is not None:
        for key, have in (("arch", backbone.arch), ("stem", backbone.stem_type),
                          ("in_chans", backbone.in_chans)):
            if key in meta and meta[key] != have:
                raise UserError(
                    f"checkpoint {path} was made for {key}={meta[key]!r}, "
                    f"not {key}={have!r}"
                )
    try:
        matched, report = match_state_dict(state, backbone, ignore=("fc.", "classifier."))
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    missing = [k for k in report.missing if not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"checkpoint {path} does not fit {backbone.arch}: {len(missing)} tensors missing, "
            f"e.g. {missing[0]}"
        )
    backbone.load_state_dict(matched, strict=False)

