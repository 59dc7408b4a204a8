"""PyTorch Lightning with fusedopt optimizers: configure_optimizers returning one (Lightning's
closure-based step, bitwise the same as a plain loop), the precision plugins (bf16-mixed, and
16-mixed with its GradScaler, unscaled in our kernel), the configure_optimizers helper with a
scheduler, and LightningCLI selecting the optimizer by class path. Tiny char-LM, CPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning", reason="lightning is not installed (pip install lightning)")

import fusedopt  # noqa: E402
from fusedopt.integrations.lightning import configure_optimizers  # noqa: E402
from lightning.pytorch.plugins.precision import MixedPrecision  # noqa: E402

VOCAB, SEQ = 32, 12


def make_net(vocab=VOCAB, dim=32, hidden=64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab, dim), nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                         nn.Linear(hidden, vocab))


def batches(n=8, bs=8):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = (torch.arange(SEQ) + torch.randint(0, VOCAB, (bs, 1), generator=g)) % VOCAB
        out.append((x, (x + 1) % VOCAB))
    return out


def loader():  # the same batches, in order (batch_size=None: each item is a batch)
    return torch.utils.data.DataLoader(batches(), batch_size=None)


def lm_loss(net, batch):
    x, y = batch
    return nn.functional.cross_entropy(net(x).flatten(0, 1), y.flatten())


class LitLM(L.LightningModule):
    def __init__(self, opt_factory=None):
        super().__init__()
        self.net = make_net()
        self.opt_factory = opt_factory
        self.losses = []

    def training_step(self, batch, _):
        loss = lm_loss(self.net, batch)
        self.losses.append(float(loss))
        return loss

    def configure_optimizers(self):
        return self.opt_factory(self)


class CLIModule(LitLM):  # no configure_optimizers: LightningCLI builds the optimizer
    configure_optimizers = L.LightningModule.configure_optimizers

    def __init__(self):
        super().__init__()


class Data(L.LightningDataModule):
    def train_dataloader(self):
        return loader()


def fit(module, steps, **trainer_kw):
    tr = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, **trainer_kw)
    tr.fit(module, train_dataloaders=loader())
    return tr


def test_closure_step_equals_plain_loop():
    lit = LitLM(lambda m: fusedopt.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1))
    tr = fit(lit, 8)
    opt = tr.optimizers[0]
    assert type(opt) is fusedopt.AdamW and float(opt.state[lit.net[0].weight]["step"]) == 8
    net = make_net()
    ref = fusedopt.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    for b in batches():
        def closure():
            ref.zero_grad()
            loss = lm_loss(net, b)
            loss.backward()
            return loss
        ref.step(closure)
    for p, q in zip(lit.net.parameters(), net.parameters()):
        assert torch.equal(p, q)
    assert lit.losses[-1] < lit.losses[0]


def test_bf16_mixed():
    lit = LitLM(lambda m: fusedopt.Lion(m.parameters(), lr=2e-3))
    tr = fit(lit, 16, precision="bf16-mixed")
    assert type(tr.precision_plugin).__name__ == "MixedPrecision" and tr.precision_plugin.scaler is None
    assert lit.net[2].weight.dtype == torch.float32  # autocast: params stay fp32, fp32 states
    assert tr.optimizers[0].state[lit.net[2].weight]["exp_avg"].dtype == torch.float32
    assert lit.losses[-1] < 0.8 * lit.losses[0]


def test_16_mixed_grad_scaler_unscales_in_the_kernel():
    """16-mixed's GradScaler on the CPU (Lightning maps 16-mixed to bf16 on the CPU unless the plugin
    is given): Lightning leaves unscaling to our step (_step_supports_amp_scaling), GradScaler hands
    grad_scale / found_inf to the kernel. Bitwise equal to a plain autocast + GradScaler loop."""
    lit = LitLM(lambda m: fusedopt.AdamW(m.parameters(), lr=1e-2))
    tr = fit(lit, 8, plugins=[MixedPrecision("16-mixed", "cpu")])
    scaler = tr.precision_plugin.scaler
    assert scaler is not None and scaler.get_scale() == 65536.0
    net = make_net()
    ref = fusedopt.AdamW(net.parameters(), lr=1e-2)
    ref_scaler = torch.amp.GradScaler("cpu")
    for b in batches():
        ref.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = lm_loss(net, b)
        ref_scaler.scale(loss).backward()
        ref_scaler.step(ref)
        ref_scaler.update()
    for p, q in zip(lit.net.parameters(), net.parameters()):
        assert torch.equal(p, q)
    # the grads left in .grad are unscaled by the kernel (GradScaler did not unscale them first)
    g = lit.net[4].weight.grad
    assert g is not None and float(g.abs().max()) < 10.0
    assert lit.losses[-1] < lit.losses[0]


def test_configure_optimizers_helper_with_scheduler():
    sched = lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))  # noqa: E731
    lit = LitLM(lambda m: configure_optimizers(m, "adamw", lr=1e-2, weight_decay=0.1, scheduler=sched))
    tr = fit(lit, 6)
    opt = tr.optimizers[0]
    assert type(opt) is fusedopt.AdamW and [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 7)  # stepped per step, 6 times


def test_lightning_cli_selects_by_class_path(tmp_path):
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(CLIModule, Data, run=True, save_config_callback=None, args=[
        "fit", "--optimizer", "fusedopt.AdamW", "--optimizer.lr", "0.02", "--optimizer.state_bits", "16",
        "--trainer.max_steps", "4", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        f"--trainer.default_root_dir={tmp_path}"])
    opt = cli.trainer.optimizers[0]
    assert type(opt) is fusedopt.AdamW and opt.defaults["lr"] == 0.02
    w = cli.model.net[2].weight
    assert opt.state[w]["exp_avg"].dtype == torch.bfloat16 and float(opt.state[w]["step"]) == 4
