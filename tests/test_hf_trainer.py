"""Hugging Face Trainer (transformers 5.x) with fusedopt optimizers, on tiny GPT-2 / Llama configs
trained from scratch on the CPU (no downloads): optimizer_cls_and_kwargs, optimizers=(opt, sched),
exact resume from a checkpoint with 8-bit states, the 32-bit embedding rule, and the
TrainingArguments route (optim="fusedopt_<rule>")."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")
pytest.importorskip("accelerate", reason="accelerate (needed by transformers.Trainer) is not installed")

import fusedopt  # noqa: E402
from fusedopt.integrations import hf  # noqa: E402

VOCAB, SEQ = 64, 16


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=SEQ)
    return transformers.LlamaForCausalLM(cfg)


class Tokens(torch.utils.data.Dataset):
    """Sequences of a small repeating pattern with noise: learnable in a few dozen steps."""

    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        base = torch.arange(SEQ) % 8
        self.x = (base + torch.randint(0, 2, (n, SEQ), generator=g) * 8) % VOCAB

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=24, learning_rate=3e-3,
                logging_steps=4, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0,
                dataloader_num_workers=0, weight_decay=0.01)
    base.update(kw)
    return base


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def inner(trainer):
    opt = trainer.optimizer
    return getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps it


def test_optimizer_cls_and_kwargs_gpt2(tmp_path):
    model = gpt2()
    tr = transformers.Trainer(model=model, args=transformers.TrainingArguments(**args(tmp_path)),
                              train_dataset=Tokens(),
                              optimizer_cls_and_kwargs=(fusedopt.AdamW, {"lr": 3e-3, "betas": (0.9, 0.95)}))
    tr.train()
    opt = inner(tr)
    assert type(opt) is fusedopt.AdamW
    # Trainer's decay / no-decay groups; every param stepped 24 times by the fused kernel
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert all(float(opt.state[p]["step"]) == 24 for g in opt.param_groups for p in g["params"])
    ls = losses(tr)
    assert ls[-1] < 0.7 * ls[0], ls


def test_optimizers_tuple_llama(tmp_path):
    model = llama()
    opt = fusedopt.Lion(model.parameters(), lr=2e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / 4))
    tr = transformers.Trainer(model=model, args=transformers.TrainingArguments(**args(tmp_path)),
                              train_dataset=Tokens(), optimizers=(opt, sched))
    tr.train()
    assert inner(tr) is opt and float(opt.state[model.model.embed_tokens.weight]["step"]) == 24
    ls = losses(tr)
    assert ls[-1] < 0.7 * ls[0], ls


def test_keep_embeddings_32bit_is_trainers_rule():
    """The params Trainer registers with bitsandbytes' GlobalOptimManager (every nn.Embedding's
    weight) are the ones overridden."""
    model = gpt2()
    n = hf.keep_embeddings_32bit(model)
    embs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert n == sum(w.numel() for w in embs) and len(embs) == 2
    for name, p in model.named_parameters():
        assert (getattr(p, "_fusedopt_override", None) == {"state_bits": 32}) == any(p is w for w in embs), name


def test_resume_from_checkpoint_is_exact_with_8bit_states(tmp_path):
    """24 steps uninterrupted == 12 steps, save, then resume_from_checkpoint in a new Trainer over a
    fresh model and 12 more: params bitwise equal. 8-bit states (min_8bit_size=1024 so the MLP and
    attention matrices are 8-bit) with the embeddings kept in 32 bits; the resumed run does not call
    keep_embeddings_32bit: the choice comes back with the checkpoint's optimizer state."""
    kwargs = {"lr": 3e-3, "state_bits": 8, "min_8bit_size": 1024}
    a = gpt2()
    hf.keep_embeddings_32bit(a)
    tr_a = transformers.Trainer(model=a, args=transformers.TrainingArguments(
        **args(tmp_path / "a", save_strategy="steps", save_steps=12)), train_dataset=Tokens(),
        optimizer_cls_and_kwargs=(fusedopt.AdamW, kwargs))
    tr_a.train()
    opt_a = inner(tr_a)
    assert opt_a.state[a.transformer.h[0].mlp.c_fc.weight]["exp_avg"].dtype == torch.uint8
    assert opt_a.state[a.transformer.wte.weight]["exp_avg"].dtype == torch.float32

    b = gpt2()
    tr_b = transformers.Trainer(model=b, args=transformers.TrainingArguments(**args(tmp_path / "b")),
                                train_dataset=Tokens(), optimizer_cls_and_kwargs=(fusedopt.AdamW, kwargs))
    tr_b.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-12"))
    opt_b = inner(tr_b)
    assert opt_b.state[b.transformer.wte.weight]["exp_avg"].dtype == torch.float32
    assert opt_b.state[b.transformer.wte.weight]["override"] == {"state_bits": 32}
    assert opt_b.state[b.transformer.h[1].mlp.c_proj.weight]["exp_avg"].dtype == torch.uint8
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert losses(tr_b) == losses(tr_a)[-len(losses(tr_b)):]


def test_training_arguments_route(tmp_path):
    """optim="fusedopt_<rule>" in this module's TrainingArguments, an unchanged Trainer: the class,
    Trainer's lr / betas / eps, optim_args, the embedding rule for 8-bit, and training."""
    TA = hf.TrainingArguments
    model = gpt2()
    ta = TA(**args(tmp_path, optim="fusedopt_adamw8bit", optim_args="min_8bit_size=1024", adam_beta2=0.95))
    tr = transformers.Trainer(model=model, args=ta, train_dataset=Tokens())
    tr.train()
    opt = inner(tr)
    assert type(opt) is fusedopt.AdamW8bit and opt.defaults["betas"] == (0.9, 0.95)
    assert opt.defaults["lr"] == 3e-3 and opt.defaults["min_8bit_size"] == 1024
    assert opt.state[model.transformer.wte.weight]["exp_avg"].dtype == torch.float32
    assert opt.state[model.transformer.h[0].mlp.c_fc.weight]["exp_avg"].dtype == torch.uint8
    ls = losses(tr)
    assert ls[-1] < 0.7 * ls[0], ls
    # another rule with its own options; Lion's betas are not Adam's, so adam_beta* do not reach it
    cls, kw = hf.optimizer_cls_and_kwargs(TA(**args(tmp_path, optim="fusedopt_lamb", optim_args="max_grad_norm=0.5")))
    assert cls is fusedopt.LAMB and kw == {"lr": 3e-3, "betas": (0.9, 0.999), "max_grad_norm": 0.5}  # eps 1e-6 kept
    cls, kw = hf.optimizer_cls_and_kwargs(TA(**args(tmp_path, optim="fusedopt_lion")))
    assert cls is fusedopt.Lion and kw == {"lr": 3e-3}
    # a plain transformers name still works with the subclass
    assert TA(**args(tmp_path, optim="adamw_torch")).optim == "adamw_torch"
    with pytest.raises(ValueError, match="unknown rule 'adamz'"):
        TA(**args(tmp_path, optim="fusedopt_adamz"))
