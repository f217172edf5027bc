"""An independent single-process float64 reference of dsunlearn's unlearning update (tests only).

Written from docs/methods.md, not from `dsunlearn/unlearn*.py`: it reuses only the data pipeline (the same encoded
items, the same global batches from `BatchStream`) and the tiny model on disk. Per optimizer step, on the WHOLE
global batch at once (no ranks, no micro-batches, no DeepSpeed), with the model loaded in float64:

    L_f   forget objective, mean over the global batch (answer tokens for ga/graddiff, sequences for npo, pairs of a
          forget answer and its refusal for dpo: the refusal of item i picked by data/refusals.py)
    R     mean answer-token NLL (the risk of the G-effect; the retain NLL of GRU and GradDiff)
    g_u = grad(gamma L_f),  g_r = grad R(D_r)
    GRU:  h = g_u (gru_project forget) or g_u + lambda grad L_reg (combined); the EMA input e = g_r
          (gru_ema_from nll) or grad of KL(p_o || p_theta) on the retain answer tokens, mean over them (kl);
          G_r(t) = c e + (1 - c) G_r(t-1), G_r(0) = 0; if <h, G_r> < 0: h -= k G_r with k = <h, G_r>/||G_r||^2,
          or with a cosine clip kappa, k = max(<h, G_r>, kappa ||h|| ||G_r||)/||G_r||^2
    g = h + lambda grad L_reg (forget) or h (combined)  (L_reg = retain NLL when the run has a retain term)
    G-effect: e_u = <grad R(D_f), grad L_f>, e_r = <grad R(D_r), grad L_f> per layer group (raw, no gamma)

then the optimizer step (plain SGD, or AdamW with weight decay on >= 2-D parameters only, constant lr).

With `objective.loss_mean: micro_batch` (open-unlearning's rule) every mean above (L_f, R, L_reg) is instead the
mean over the global batch's micro-batches (contiguous slices of `engine.micro_batch_size` of its indices) of
each one's own mean.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

IGNORE = -100
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def tiny_model_dir(path, seed: int = 0, layers: int = 2) -> str:
    """Build and save (once) a tiny tied-embedding Llama + its locally trained tokenizer in `path`.

    As `dsunlearn.models.tiny.build_tiny_model` (hidden 32, `layers` decoder layers) but with MLP biases of odd
    size 63: ZeRO-3 pads their last partition and ZeRO-1/2 partition boundaries fall inside parameters.
    """
    from pathlib import Path

    from transformers import LlamaConfig, LlamaForCausalLM

    from dsunlearn.models.tiny import train_tokenizer
    from dsunlearn.suites.tofu import synthetic

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return str(path)
    tok = train_tokenizer(list(synthetic.corpus(synthetic.generate(seed=0))), vocab_size=400, max_length=128)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=63,
        mlp_bias=True,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(path)
    return str(path)


def group_of(name: str) -> str:
    """docs/methods.md layer groups for a HF Llama parameter name (written independently of dsunlearn.engine.groups)."""
    m = _LAYER.search(name)
    if m:
        return f"layers.{m.group(1)}"
    if name.startswith("lm_head."):
        return "lm_head"
    if "embed_tokens" in name:
        return "embed"
    if name == "model.norm.weight":
        return "norm"
    raise ValueError(f"unexpected parameter {name}")


def _pad(encoded, indices, pad_id):
    rows = [encoded[i] for i in indices]
    t = max(len(e.input_ids) for e in rows)
    ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), t), IGNORE, dtype=torch.long)
    att = torch.zeros((len(rows), t), dtype=torch.long)
    for b, e in enumerate(rows):
        n = len(e.input_ids)
        ids[b, :n] = torch.tensor(e.input_ids)
        labels[b, :n] = torch.tensor(e.labels)
        att[b, :n] = 1
    return ids, att, labels


def answer_logprobs(model, encoded, indices, pad_id):
    """(log p of each next answer token [B, T-1] float64, 0 elsewhere; mask [B, T-1])."""
    ids, att, labels = _pad(encoded, indices, pad_id)
    logits = model(input_ids=ids, attention_mask=att).logits.double()[:, :-1]
    target = labels[:, 1:]
    mask = target != IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(mask, logp, torch.zeros((), dtype=logp.dtype)), mask


def mean_nll(logp, mask):
    return -logp.sum() / mask.sum()


def retain_kl_surrogate(model, theta_o, encoded, indices, pad_id):
    """A float64 loss whose gradient is that of KL = mean over the answer tokens t of KL(p_o,t || p_theta,t).

    d KL_t / d z_t = softmax(z_t) - p_o,t for the logits z_t predicting answer token t, so the surrogate
    sum_t <sg(softmax(z_t) - p_o,t), z_t> / n has the KL's gradient, and it is exactly 0 where theta = theta_o
    (the logits are then bitwise equal), as the engine's KL backward is: no rounding noise for GRU to project on.
    """
    ids, att, labels = _pad(encoded, indices, pad_id)
    z = model(input_ids=ids, attention_mask=att).logits.double()[:, :-1]
    with torch.no_grad():
        p_o = torch.softmax(theta_o(input_ids=ids, attention_mask=att).logits.double()[:, :-1], dim=-1)
    mask = labels[:, 1:] != IGNORE
    coef = (torch.softmax(z, dim=-1) - p_o).detach()
    return (coef * z).sum(-1)[mask].sum() / mask.sum()


def forget_objective(name: str, logp, mask, ref_seq=None, beta: float = 0.1, refusal=None):
    """L_f of docs/methods.md over the whole global batch; `refusal` = (logp, mask, ref_seq) of the refusals (dpo)."""
    if name in ("ga", "graddiff"):
        return logp.sum() / mask.sum()  # -mean_tokens NLL
    if name == "npo":
        units = mask.any(dim=-1)
        seq = logp.sum(dim=-1)
        per = -(2.0 / beta) * F.logsigmoid(-beta * (seq - ref_seq))
        return per[units].mean()
    if name == "dpo":  # win = the refusal, lose = the forget answer
        w_logp, w_mask, w_ref_seq = refusal
        units = mask.any(dim=-1) & w_mask.any(dim=-1)
        margin = (w_logp.sum(dim=-1) - w_ref_seq) - (logp.sum(dim=-1) - ref_seq)
        return (-(2.0 / beta) * F.logsigmoid(beta * margin))[units].mean()
    raise ValueError(f"reference has no objective {name}")


@dataclass
class RefStep:
    """What the reference saw at one step (inputs of the update, for comparing logged numbers)."""

    loss_forget: float | None = None  # L_f at theta_t (global-batch mean, no gamma)
    loss_retain: float | None = None  # retain NLL at theta_t
    gru_dot: float | None = None
    gru_projected: bool | None = None
    gru_clipped: bool | None = None
    gru_cos: float | None = None
    geffect_u_groups: dict = field(default_factory=dict)
    geffect_r_groups: dict = field(default_factory=dict)
    grad_norm_objective: float | None = None


@dataclass
class RefResult:
    initial: dict
    final: dict
    steps: list


def reference_unlearn(cfg, steps: int, world: int, geffect: bool = False, adapt=None) -> RefResult:
    """Run `steps` optimizer steps of the unlearning update of `cfg` in float64 on one process.

    `world` only serves to build the same `BatchStream`s (their global batches do not depend on it).
    `adapt(model) -> model`, if given, changes the float64 model before training (the LoRA test's own low-rank
    layers, base frozen): the trainable parameters are then whatever it leaves with requires_grad.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dsunlearn.data.collate import encode_items, pad_id_of
    from dsunlearn.data.sampler import BatchStream
    from dsunlearn.suites.tofu.data import load_split

    d, o, e, g = cfg.data, cfg.objective, cfg.engine, cfg.geometry
    assert e.scheduler == "constant" and e.warmup_ratio == 0.0 and e.grad_clip == 0.0, "reference: constant lr only"
    assert o.name in ("ga", "graddiff", "npo", "dpo")
    retain_loss = {"graddiff": "nll"}.get(o.name) if o.retain_loss == "auto" else o.retain_loss
    assert retain_loss in (None, "none", "nll")
    has_retain = retain_loss == "nll"
    beta = 0.1 if o.params.get("beta") is None else o.params["beta"]

    tok = AutoTokenizer.from_pretrained(cfg.model.name_or_path)
    pad = pad_id_of(tok)
    forget_items = load_split(d, d.forget_split)
    forget = encode_items(tok, forget_items, d)
    refusals = None
    if o.name == "dpo":
        from dsunlearn.data.refusals import read_refusals, refusal_items

        refusals = encode_items(tok, refusal_items(forget_items, read_refusals(d.idk_file), cfg.run.seed), d)
    retain = encode_items(tok, load_split(d, d.retain_split), d)
    micro = e.micro_batch_size
    gb = e.global_batch_size or micro * world * e.grad_accum_steps
    fs = BatchStream(len(forget), gb, micro, world, seed=cfg.run.seed)
    rs = BatchStream(len(retain), gb, micro, world, seed=cfg.run.seed + 1)

    model = AutoModelForCausalLM.from_pretrained(cfg.model.name_or_path, dtype=torch.float64)
    if adapt is not None:
        model = adapt(model)
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    initial = {n: p.detach().clone() for n, p in named}
    ema_from_kl = g.gru and g.gru_ema_from == "kl"
    if ema_from_kl:
        assert o.kl_positions == "answer", "reference: KL over answer tokens only"
        theta_o = copy.deepcopy(model).eval()  # frozen theta_0 for the KL

    ref_seq = refusal_ref_seq = None
    if o.name in ("npo", "dpo"):
        with torch.no_grad():
            lp, m = answer_logprobs(model, forget, list(range(len(forget))), pad)
            ref_seq = lp.sum(dim=-1)  # l_ref(s) of every forget item, at theta_0
            if refusals is not None:
                refusal_ref_seq = answer_logprobs(model, refusals, list(range(len(refusals))), pad)[0].sum(dim=-1)

    if e.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=e.lr)
    else:
        decay = [p for p in params if p.ndim >= 2]
        other = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": e.weight_decay}, {"params": other, "weight_decay": 0.0}],
            lr=e.lr,
            betas=(0.9, 0.999),
            eps=1e-8,
        )

    def mean(loss_of, idx):
        """loss_of(indices) over the global batch `idx`: one mean, or the mean of the micro-batches' means."""
        if o.loss_mean == "global":
            return loss_of(idx)
        parts = [idx[i : i + micro] for i in range(0, len(idx), micro)]
        return sum(loss_of(p) for p in parts) / len(parts)

    def grad(loss):
        return [x.detach() for x in torch.autograd.grad(loss, params, allow_unused=False)]

    def dot(a, b):
        return sum(float((x * y).sum()) for x, y in zip(a, b, strict=True))

    ema = None
    records = []
    for step in range(steps):
        f_idx, r_idx = fs.global_indices(step), rs.global_indices(step)
        rec = RefStep()

        def objective_of(idx):
            lp_f, m_f = answer_logprobs(model, forget, idx, pad)
            ref = ref_seq[idx] if ref_seq is not None else None
            refusal = (*answer_logprobs(model, refusals, idx, pad), refusal_ref_seq[idx]) if refusals else None
            return forget_objective(o.name, lp_f, m_f, ref, beta, refusal)

        def nll_of(encoded):
            return lambda idx: mean_nll(*answer_logprobs(model, encoded, idx, pad))

        loss_f = mean(objective_of, f_idx)
        grad_obj = grad(loss_f)  # grad L_f (no gamma)
        loss_r = mean(nll_of(retain), r_idx)
        g_r = grad(loss_r)
        rec.loss_forget, rec.loss_retain = float(loss_f.detach()), float(loss_r.detach())
        if geffect:
            g_risk_f = grad(mean(nll_of(forget), f_idx))
            for n, gf, gr, go in zip([n for n, _ in named], g_risk_f, g_r, grad_obj, strict=True):
                grp = group_of(n)
                rec.geffect_u_groups[grp] = rec.geffect_u_groups.get(grp, 0.0) + float((gf * go).sum())
                rec.geffect_r_groups[grp] = rec.geffect_r_groups.get(grp, 0.0) + float((gr * go).sum())
            rec.grad_norm_objective = dot(grad_obj, grad_obj) ** 0.5
        g_u = [o.gamma * x for x in grad_obj]
        combined = g.gru and g.gru_project == "combined" and has_retain  # g_u becomes h of the docstring
        if combined:
            g_u = [x + o.lambda_ * y for x, y in zip(g_u, g_r, strict=True)]
        if g.gru:
            c = g.gru_ema
            e = grad(mean(lambda i: retain_kl_surrogate(model, theta_o, retain, i, pad), r_idx)) if ema_from_kl else g_r
            ema = [c * x for x in e] if ema is None else [c * x + (1 - c) * y for x, y in zip(e, ema, strict=True)]
            ip, nsq, usq = dot(g_u, ema), dot(ema, ema), dot(g_u, g_u)
            rec.gru_dot, rec.gru_projected = ip, ip < 0 and nsq > 0
            rec.gru_clipped, rec.gru_cos = False, ip / (usq * nsq) ** 0.5 if nsq > 0 else 0.0
            if rec.gru_projected:
                k = ip / nsq
                if g.gru_cos_clip is not None and rec.gru_cos < g.gru_cos_clip:
                    k, rec.gru_clipped = g.gru_cos_clip * (usq * nsq) ** 0.5 / nsq, True
                g_u = [x - k * y for x, y in zip(g_u, ema, strict=True)]
        total = [x + o.lambda_ * y for x, y in zip(g_u, g_r, strict=True)] if has_retain and not combined else g_u
        for p, x in zip(params, total, strict=True):
            p.grad = x.clone()
        opt.step()
        opt.zero_grad(set_to_none=True)
        records.append(rec)
    final = {n: p.detach().clone() for n, p in named}
    return RefResult(initial=initial, final=final, steps=records)


def max_abs_diff(a: dict, b: dict) -> float:
    """max |a - b| over every element of every parameter (same names required)."""
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:5]
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)
