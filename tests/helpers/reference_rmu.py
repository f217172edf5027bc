"""An independent single-process float64 reference of RMU's unlearning update (tests only).

Written from the RMU formulas of docs/methods.md, not from `dsunlearn/objectives/rmu.py` or the loop: the hidden
state of decoder layer k is read from `output_hidden_states[k + 1]` (no hooks), each sequence is run on its own
(no padding), and the masks and means are spelled out element by element:

    L_f = mean over sequences s of mean over {t: labels_s[t] != -100} of sum_j (h_k(s)_tj - c u_j)^2 / d
    L_r = the same with theta_o's h_k(s)_t in place of c u
    u   = torch.rand(d) from the global generator seeded with run.seed, / its norm
    g   = gamma grad L_f + lambda grad L_r over the trainable subset only (layers k-n+1..k, the pattern);
          with GRU: gamma grad L_f projected against the EMA of grad(retain answer NLL) first (GRU paper)
    G-effect: e_u = <grad NLL(D_f), grad L_f>, e_r = <grad NLL(D_r), grad L_f> over the subset (raw, no gamma)

then plain SGD (constant lr). Frozen parameters are never touched.
"""

from __future__ import annotations

import copy
import re

import torch

from helpers.reference_unlearn import tiny_model_dir

IGNORE = -100


def tiny_deep_model_dir(path, layers: int = 4, seed: int = 0) -> str:
    """A tiny tied-embedding Llama with `layers` decoder layers and MLP biases (so that the pattern
    mlp.down_proj.weight leaves down_proj.bias frozen), with its locally trained tokenizer, saved once:
    `reference_unlearn.tiny_model_dir`'s model, deeper."""
    return tiny_model_dir(path, seed=seed, layers=layers)


def direction(d: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    u = torch.rand(d).double()
    return u / torch.sqrt((u * u).sum())


def layer_hidden(model, ids: list[int], k: int) -> torch.Tensor:
    """[T, d] float64 output of decoder layer k for one unpadded sequence."""
    out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[k + 1][0].double()


def activation_mse(hiddens: list[torch.Tensor], targets: list[torch.Tensor], labels: list[list[int]]) -> torch.Tensor:
    per_seq = []
    for h, tgt, lab in zip(hiddens, targets, labels, strict=True):
        rows = [t for t, y in enumerate(lab) if y != IGNORE]
        if not rows:
            continue
        d = h.shape[-1]
        per_seq.append(sum(((h[t] - tgt[t]) ** 2).sum() / d for t in rows) / len(rows))
    return sum(per_seq) / len(per_seq)


def answer_nll(model, items) -> torch.Tensor:
    """Mean over all answer tokens of the items of -log p(token | prefix) (the G-effect's risk, the retain NLL)."""
    total, count = 0.0, 0
    for e in items:
        logp = torch.log_softmax(model(input_ids=torch.tensor([e.input_ids])).logits[0].double(), dim=-1)
        for t in range(1, len(e.input_ids)):
            if e.labels[t] != IGNORE:
                total = total - logp[t - 1, e.labels[t]]
                count += 1
    return total / count


def trainable_names(model, layers: set[int], pattern: str) -> list[str]:
    out = []
    for n, _ in model.named_parameters():
        m = re.match(r"model\.layers\.(\d+)\.(.*)$", n)
        if m and int(m.group(1)) in layers and re.fullmatch(pattern, m.group(2)):
            out.append(n)
    return out


def reference_rmu(model_dir, forget, retain, batches, *, layer, train_layers, pattern, c, gamma, lam, lr, seed,
                  gru=False, gru_ema=1.0, geffect=False):  # fmt: skip
    """`batches`: per step (forget indices, retain indices) of the global batch. Returns (initial, final params
    of the whole model as float64 dicts, per-step records)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64)
    model.train()
    theta_o = copy.deepcopy(model).eval()
    names = trainable_names(model, set(range(layer - train_layers + 1, layer + 1)), pattern)
    params = dict(model.named_parameters())
    subset = [params[n] for n in names]
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    u = None
    ema, records = None, []

    def grad(loss):
        return [x.detach() for x in torch.autograd.grad(loss, subset)]

    def dot(a, b):
        return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))

    for f_idx, r_idx in batches:
        fi, ri = [forget[i] for i in f_idx], [retain[i] for i in r_idx]
        hf = [layer_hidden(model, e.input_ids, layer) for e in fi]
        if u is None:
            u = direction(hf[0].shape[-1], seed)
        loss_f = activation_mse(hf, [c * u.expand_as(h) for h in hf], [e.labels for e in fi])
        hr = [layer_hidden(model, e.input_ids, layer) for e in ri]
        with torch.no_grad():
            hr_o = [layer_hidden(theta_o, e.input_ids, layer) for e in ri]
        loss_r = activation_mse(hr, hr_o, [e.labels for e in ri])
        g_f, g_r = grad(loss_f), grad(loss_r)
        rec = {"loss_forget": float(loss_f.detach()), "loss_retain": float(loss_r.detach())}
        if geffect or gru:
            g_nll_r = grad(answer_nll(model, ri))
        if geffect:
            g_nll_f = grad(answer_nll(model, fi))
            rec["geffect_u"], rec["geffect_r"] = dot(g_nll_f, g_f), dot(g_nll_r, g_f)
        h = [gamma * x for x in g_f]
        if gru:
            ema = [gru_ema * x for x in g_nll_r] if ema is None else [
                gru_ema * x + (1 - gru_ema) * y for x, y in zip(g_nll_r, ema, strict=True)]  # fmt: skip
            ip, nsq = dot(h, ema), dot(ema, ema)
            rec["gru_dot"], rec["gru_projected"] = ip, ip < 0 and nsq > 0
            if ip < 0 and nsq > 0:
                h = [x - ip / nsq * y for x, y in zip(h, ema, strict=True)]
        with torch.no_grad():
            for p, x, y in zip(subset, h, g_r, strict=True):
                p -= lr * (x + lam * y)
        records.append(rec)
    final = {n: p.detach().clone() for n, p in model.named_parameters()}
    return initial, final, records, names
