"""Fused features: per-model z-score and 1/sqrt(width) block scaling, checked against numbers
worked by hand and against an independent re-computation of the fusion's linear probe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ssl_ft.checkpoint import save_checkpoint
from ssl_ft.ensemble import EnsembleConfig, FusionNet, ensemble, load_members
from ssl_ft.ensemble.engine import C_GRID
from ssl_ft.ensemble.members import block_normalize, member_features
from ssl_ft.models import create_backbone
from tests.conftest import grey_meta


def test_block_normalize_on_a_worked_example():
    # column 0: 0, 2, 4 -> mean 2, population std sqrt(8/3); column 1 constant -> std 1 (kept
    # finite); the block is 2 wide, so both scales carry a further 1/sqrt(2)
    train = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]])
    shift, scale = block_normalize(train)
    np.testing.assert_allclose(shift, [2.0, 10.0])
    np.testing.assert_allclose(scale, [1 / (math.sqrt(8 / 3) * math.sqrt(2)), 1 / math.sqrt(2)])


@pytest.mark.parametrize("width", [3, 64, 512])
def test_every_block_has_total_variance_one_whatever_its_width(width):
    rng = np.random.default_rng(width)
    train = rng.normal(5.0, rng.uniform(0.1, 20.0, width), size=(200, width))
    shift, scale = block_normalize(train)
    z = (train - shift) * scale
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    assert z.var(0).sum() == pytest.approx(1.0)
    np.testing.assert_allclose(z.var(0), 1.0 / width)


def _ckpt(path: Path, seed: int, method: str, family: str) -> Path:
    torch.manual_seed(seed)
    meta = grey_meta(method, family, mean=0.5, std=0.25)
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), meta)
    return path


def _reference_probe(train, y_train, val, y_val, test, y_test):
    """Best-validation-AUC logistic regression over the engine's C grid, written out."""
    best = None
    for c in C_GRID:
        clf = LogisticRegression(C=c, max_iter=2000).fit(train, y_train)
        auc = roc_auc_score(y_val, clf.predict_proba(val)[:, 1])
        if best is None or auc > best[0]:
            best = (auc, c, clf)
    _, c, clf = best
    return c, clf.predict_proba(val), clf.predict_proba(test)


def test_fusion_probe_equals_an_independent_recomputation(data_root, tmp_path):
    ckpts = [_ckpt(tmp_path / "a.pt", 1, "simclr", "contrastive"),
             _ckpt(tmp_path / "b.pt", 2, "genesis", "restorative")]
    cfg = EnsembleConfig(checkpoints=[str(c) for c in ckpts], data="pneumoniamnist",
                         data_root=str(data_root), limit=200, out=str(tmp_path / "out"),
                         cache_dir=str(tmp_path / "cache"), threads=1)
    _, metrics = ensemble(cfg)
    members = load_members(cfg)
    feats = [member_features(m, tmp_path / "cache", torch.device("cpu"), "fp32")
             for m in members]
    labels = members[0].splits.labels
    blocks = {}
    for s in ("train", "val", "test"):
        parts = []
        for f in feats:  # z-score with train statistics, then 1/sqrt(width)
            mu, sd = f["train"].mean(0), f["train"].std(0)
            sd = np.where(sd < 1e-8, 1.0, sd)
            parts.append((f[s] - mu) / sd / math.sqrt(f["train"].shape[1]))
        blocks[s] = parts
    x = {s: np.concatenate(blocks[s], 1) for s in blocks}
    c, _, test_probs = _reference_probe(x["train"], labels["train"], x["val"], labels["val"],
                                        x["test"], labels["test"])
    assert metrics["C"] == c
    assert metrics["test"]["auc"] == pytest.approx(roc_auc_score(labels["test"],
                                                                 test_probs[:, 1]), abs=1e-9)
    assert metrics["test"]["acc"] == pytest.approx((test_probs.argmax(1) == labels["test"]).mean())
    # each model alone on its own block, and late fusion as the mean of their probabilities
    singles = []
    for m, i in zip(members, range(2), strict=True):
        _, _, p = _reference_probe(blocks["train"][i], labels["train"], blocks["val"][i],
                                   labels["val"], blocks["test"][i], labels["test"])
        singles.append(p)
        assert metrics["baselines"][m.name]["test"]["auc"] == pytest.approx(
            roc_auc_score(labels["test"], p[:, 1]), abs=1e-9)
    late = np.mean(singles, 0)
    assert metrics["baselines"]["late_fusion"]["test"]["auc"] == pytest.approx(
        roc_auc_score(labels["test"], late[:, 1]), abs=1e-9)


def test_fusion_net_applies_shift_and_scale_per_block(data_root, tmp_path):
    ckpts = [_ckpt(tmp_path / "a.pt", 1, "simclr", "contrastive"),
             _ckpt(tmp_path / "b.pt", 2, "genesis", "restorative")]
    cfg = EnsembleConfig(checkpoints=[str(c) for c in ckpts], data="pneumoniamnist",
                         data_root=str(data_root), limit=40, out=str(tmp_path / "out"),
                         cache_dir=str(tmp_path / "cache"), threads=1)
    members = load_members(cfg)
    rng = np.random.default_rng(0)
    norms = [(rng.normal(size=m.dim), rng.uniform(0.5, 2.0, m.dim)) for m in members]
    net = FusionNet(members, norms, 2).eval()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        feats = [fm.features(x) for fm in net.models]
        z = torch.cat([(f - torch.tensor(sh, dtype=torch.float32)) *
                       torch.tensor(sc, dtype=torch.float32)
                       for f, (sh, sc) in zip(feats, norms, strict=True)], 1)
        torch.testing.assert_close(net(x), net.head(z))


def test_file_sha256_is_the_file_digest_and_follows_changes(tmp_path):
    import hashlib
    import os

    from ssl_ft.ensemble.members import file_sha256

    path = tmp_path / "w.pt"
    data = os.urandom(3 << 20)  # more than one read chunk
    path.write_bytes(data)
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"other")  # new size and time: hashed again
    assert file_sha256(str(path)) == hashlib.sha256(b"other").hexdigest()


def test_per_model_values():
    from ssl_ft.ensemble.members import _per_model
    from ssl_ft.errors import UserError

    assert _per_model([], 3, "--depth", [1, 2, 3]) == [1, 2, 3]
    assert _per_model([50], 3, "--depth", [1, 2, 3]) == [50, 50, 50]
    assert _per_model((25, 75), 2, "--depth", [1, 2]) == [25, 75]
    with pytest.raises(UserError, match="^2 --layers values for 3 checkpoints"):
        _per_model(["0-50", "50-100"], 3, "--layers", [None] * 3)


def test_feature_keys_tell_models_apart(data_root, tmp_path):
    ckpt = str(_ckpt(tmp_path / "a.pt", 1, "simclr", "contrastive"))

    def keys(*checkpoints, seed=0, depths=()):
        cfg = EnsembleConfig(checkpoints=list(checkpoints), data="pneumoniamnist",
                             data_root=str(data_root), seed=seed, arch="resnet18",
                             depths=list(depths), out=str(tmp_path / "o"), threads=1)
        return [m.key for m in load_members(cfg)]

    a, none = keys(ckpt, "none")
    assert a != none and all(len(k) == 32 and int(k, 16) >= 0 for k in (a, none))
    assert keys(ckpt, "none") == [a, none]  # deterministic
    assert keys(ckpt, "none", depths=[25, 100])[0] != a  # another depth, another key
    # all labels, so the split does not depend on the seed: the seed changes the random-init
    # weights only, and so only the random-init model's key
    again, other = keys(ckpt, "none", seed=1)
    assert again == a and other != none
