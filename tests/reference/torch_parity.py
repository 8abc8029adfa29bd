#!/usr/bin/env python3
"""Independent PyTorch implementation of the nmoe model, used to make the
parity fixture that tests/test_parity.cpp checks on the CPU.

Reads fixtures/parity_inputs.safetensors (weights with nmoe's tensor names,
router biases, a batch, and the model config as TOML in the metadata), builds
the same model in float64 with plain PyTorch ops and autograd, and writes
fixtures/parity_expected.safetensors with the loss, its parts, the gradient of
every parameter (grad/<name>) and each MoE layer's expert choice (idx/<layer>).

Run (needs PyTorch and numpy; not needed by CI):
  python3 tests/reference/torch_parity.py tests/reference/fixtures
"""
import json
import math
import struct
import sys
import tomllib

import numpy as np
import torch
import torch.nn.functional as F

DT = {"F64": np.float64, "F32": np.float32, "I32": np.int32, "I64": np.int64}
DT_NAME = {np.dtype(v): k for k, v in DT.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=DT[info["dtype"]]).reshape(info["shape"]).copy()
    return out, meta


def write_safetensors(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.tobytes()
        header[name] = {"dtype": DT_NAME[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq, head_dim, theta):
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    inv = 1.0 / theta ** (2.0 * i / head_dim)
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def rope(x, cos, sin):  # x [B, T, H, Dh]
    h = x.shape[-1] // 2
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def attention(x, p, pre, cfg, cos, sin):
    B, T, D = x.shape
    H = cfg["n_heads"]
    Dh = D // H
    qkv = x @ p[pre + "attn.wqkv.weight"].T
    q, k, v = qkv.view(B, T, 3, H, Dh).unbind(2)
    q, k = rope(q, cos, sin), rope(k, cos, sin)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    o = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, D)
    return (o @ p[pre + "attn.wo.weight"].T) / math.sqrt(2 * cfg["n_layers"])


def swiglu_mlp(x, w13, w2):
    h = x @ w13.T
    f = h.shape[-1] // 2
    return (F.silu(h[..., :f]) * h[..., f:]) @ w2.T


def moe(x, p, bias, pre, cfg):
    B, T, D = x.shape
    xt = x.reshape(-1, D)
    E, K = cfg["n_routed_experts"], cfg["n_activated_experts"]
    logits = xt @ p[pre + "moe.router.weight"].T
    scores = torch.sigmoid(cfg.get("route_scale", 1.0) * logits)
    idx = torch.topk(scores + bias, K, dim=-1, sorted=True).indices
    g = scores.gather(1, idx)
    g = g / g.sum(-1, keepdim=True).clamp_min(1e-12) * cfg.get("routed_scaling_factor", 1.0)
    w13, w2 = p[pre + "moe.experts.w13"], p[pre + "moe.experts.w2"]
    out = torch.zeros_like(xt)
    for e in range(E):  # loop over experts: an implementation unlike nmoe's permutation
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel():
            out = out.index_add(0, tok, g[tok, slot][:, None] * swiglu_mlp(xt[tok], w13[e], w2[e]))
    if cfg.get("n_shared_experts", 2) > 0:
        out = out + swiglu_mlp(xt, p[pre + "moe.shared.w13.weight"], p[pre + "moe.shared.w2.weight"])
    counts = torch.bincount(idx.flatten(), minlength=E).double()
    imp = torch.zeros(E, dtype=torch.float64).index_add(0, idx.flatten(), g.flatten())
    aux = E * ((imp / imp.sum()) * (counts / counts.sum())).sum()
    return out.view(B, T, D), idx, aux


def forward(tokens, p, biases, cfg):
    """The model on tokens [B, T] (long): final-norm hidden states [B, T, D], the
    MoE layers' aux losses and their expert choices (int32 arrays by layer)."""
    T = tokens.shape[1]
    L = cfg["n_layers"]
    n_dense = cfg.get("n_dense_layers", 1) if cfg.get("n_routed_experts", 0) else L
    cos, sin = rope_tables(T, cfg["dim"] // cfg["n_heads"], cfg.get("rope_theta", 50000.0))
    eps = cfg.get("rms_norm_eps", 1e-5)
    x = p["embedding.weight"][tokens]
    auxes, idxs = [], {}
    for l in range(L):
        pre = f"layers.{l}."
        x = x + attention(rmsnorm(x, p[pre + "attn_norm.weight"], eps), p, pre, cfg, cos, sin)
        h = rmsnorm(x, p[pre + "ffn_norm.weight"], eps)
        if l < n_dense:
            x = x + swiglu_mlp(h, p[pre + "mlp.w13.weight"], p[pre + "mlp.w2.weight"])
        else:
            y, idx, aux = moe(h, p, biases[pre + "moe.router.bias"], pre, cfg)
            x = x + y
            auxes.append(aux)
            idxs[f"idx/layers.{l}"] = idx.to(torch.int32).numpy()
    return rmsnorm(x, p["norm.weight"], eps), auxes, idxs


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "tests/reference/fixtures"
    arrays, meta = read_safetensors(f"{d}/parity_inputs.safetensors")
    cfg = tomllib.loads(meta["config_toml"])
    torch.set_default_dtype(torch.float64)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()
         if not k.startswith("batch.") and not k.endswith("router.bias")}
    biases = {k: torch.tensor(v) for k, v in arrays.items() if k.endswith("router.bias")}
    tokens = torch.tensor(arrays["batch.tokens"], dtype=torch.long)
    targets = torch.tensor(arrays["batch.targets"], dtype=torch.long)
    h, auxes, idxs = forward(tokens, p, biases, cfg)
    logits = h @ p["lm_head.weight"].T
    ignore = cfg["eos_token_id"] if cfg.get("loss_mask_eos", True) else -100
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=ignore)
    alpha = cfg.get("aux_loss_alpha", 0.0)
    aux = torch.stack(auxes).mean() if auxes else torch.zeros(())
    loss = ce + alpha * aux if alpha > 0 else ce
    loss.backward()

    out = {"loss": np.array([loss.item()]), "ce_loss": np.array([ce.item()]), "aux_loss": np.array([aux.item()])}
    for k, t in p.items():
        out["grad/" + k] = t.grad.numpy()
    out.update(idxs)
    write_safetensors(f"{d}/parity_expected.safetensors", out,
                      {"torch": torch.__version__, "source": "tests/reference/torch_parity.py"})
    print(f"loss {loss.item():.12f} (ce {ce.item():.12f}, aux {aux.item():.12f}); {len(p)} gradients written")


if __name__ == "__main__":
    main()
