"""timm: every fusedopt rule through timm.optim.create_optimizer_v2 ("fusedopt<rule>"), with timm's
param groups, its kwargs conventions and its lookahead_ prefix, on a tiny ViT built from a config."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm", reason="timm is not installed (pip install --no-deps timm + the matching torchvision)")

import fusedopt  # noqa: E402
from fusedopt.factory import RULES  # noqa: E402
from fusedopt.integrations import timm as fo_timm  # noqa: E402
from timm.optim import create_optimizer_v2, list_optimizers  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def registered():
    return fo_timm.register()


def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                             depth=2, num_heads=2, num_classes=4)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 16, 16, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    return x, y


def train(model, opt, steps, koala=False):
    x, y = data()
    out = []
    for _ in range(steps):
        if koala:
            opt.predict()
        losses = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        opt.zero_grad()
        losses.mean().backward()
        if koala:
            opt.step(loss=losses.mean().detach(), loss_sq_mean=losses.pow(2).mean().detach())
        else:
            opt.step()
        out.append(float(losses.mean()))
    return out


def test_names_registered(registered):
    names = set(list_optimizers())
    assert set(registered) == {"fusedopt" + n for n in RULES} and set(registered) <= names
    assert all("_" not in n for n in registered)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule(rule):
    """The class, timm's groups (1-D params and the ViT's no_weight_decay names undecayed), and a few
    steps that lower the loss."""
    model = vit()
    kw = {"lr": 1e-2, "relative_step": False} if rule == "adafactor" else {}
    if rule not in ("adafactor", "adafactortorch", "koala", "vanillakoala"):
        kw["lr"] = {"sgd": 0.05, "sgd8bit": 0.05, "lars": 1.0, "adadelta": 1.0, "adagrad": 0.02, "adagrad8bit": 0.02,
                    "padam": 0.05, "lion": 3e-4, "lion8bit": 3e-4, "signsgd": 1e-3}.get(rule, 3e-3)
    opt = create_optimizer_v2(model, "fusedopt" + rule, weight_decay=0.05, **kw)
    assert type(opt) is RULES[rule].cls
    wd = {g["weight_decay"] for g in opt.param_groups}
    assert wd == {0.0, 0.05}
    nodecay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.cls_token) in nodecay and id(model.head.bias) in nodecay and id(model.head.weight) not in nodecay
    ls = train(model, opt, 6, koala="koala" in rule)
    assert all(torch.isfinite(torch.tensor(ls))) and min(ls[1:]) < ls[0], (rule, ls)


def test_kwargs_conventions():
    """timm drops eps / betas for rules without them and sets momentum=0.9 for rules with it."""
    model = vit()
    lion = create_optimizer_v2(model, "fusedoptlion", lr=1e-4, eps=1e-6, betas=(0.9, 0.98))
    assert lion.defaults["betas"] == (0.9, 0.98) and "eps" not in lion.defaults  # Lion takes no eps
    sgd = create_optimizer_v2(model, "fusedoptsgd", lr=0.1, eps=1e-6)
    assert sgd.defaults["momentum"] == 0.9
    adan = create_optimizer_v2(model, "fusedoptadan", lr=1e-3, betas=(0.9, 0.9, 0.9), eps=1e-6)
    assert adan.defaults["betas"] == (0.9, 0.9, 0.9) and adan.defaults["eps"] == 1e-6


def test_lookahead_prefix_and_state_dict():
    model = vit()
    opt = create_optimizer_v2(model, "lookahead_fusedoptadamw", lr=3e-3, weight_decay=0.05)
    assert type(opt).__name__ == "Lookahead" and type(opt._base_optimizer) is fusedopt.AdamW
    ls = train(model, opt, 7)
    assert ls[-1] < ls[0]
    sd = opt.state_dict()
    model2 = vit()
    model2.load_state_dict(model.state_dict())
    opt2 = create_optimizer_v2(model2, "lookahead_fusedoptadamw", lr=3e-3, weight_decay=0.05)
    opt2.load_state_dict(sd)
    train(model, opt, 3)
    train(model2, opt2, 3)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_same_training_as_timm_adamw():
    """fusedoptadamw follows timm's "adamw" (torch.optim.AdamW) step for step. The two differ in float32
    rounding, and Adam amplifies that where m is near 0 over a training run: params agree to a
    twentieth of one step (lr)."""
    a, b = vit(), vit()
    oa = create_optimizer_v2(a, "fusedoptadamw", lr=3e-3, weight_decay=0.05)
    ob = create_optimizer_v2(b, "adamw", lr=3e-3, weight_decay=0.05)
    la, lb = train(a, oa, 5), train(b, ob, 5)
    assert la == pytest.approx(lb, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=3e-3 / 20)
