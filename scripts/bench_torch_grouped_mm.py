#!/usr/bin/env python3
"""Times torch._grouped_mm on the super config's per-GPU expert shapes (the
same six products as CudaGroupedGemm.DISABLED_BenchSuperShapes): 16 x 2048
tokens routed top-7 over 256 experts of width 384, dim 768, BF16.
Usage: python3 scripts/bench_torch_grouped_mm.py   (needs PyTorch and a GPU)
"""
import torch

E, D, I, M = 256, 768, 384, 16 * 2048 * 7
g = torch.Generator().manual_seed(7)
sizes = 600 + torch.randint(0, 600, (E,), generator=g)
counts = (sizes * M // sizes.sum()).tolist()
counts[-1] = M - sum(counts[:-1])
offs = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32).cuda()

dev = "cuda"
x = torch.randn(M, D, device=dev, dtype=torch.bfloat16)
h13 = torch.randn(M, 2 * I, device=dev, dtype=torch.bfloat16)
a = torch.randn(M, I, device=dev, dtype=torch.bfloat16)
y = torch.randn(M, D, device=dev, dtype=torch.bfloat16)
w13 = torch.randn(E, 2 * I, D, device=dev, dtype=torch.bfloat16)
w2 = torch.randn(E, D, I, device=dev, dtype=torch.bfloat16)
gm = torch._grouped_mm


def time_ms(fn, iters=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


ops = [
    ("w13 fwd (x.W13^T)", lambda: gm(x, w13.transpose(-2, -1), offs=offs), 2 * I, D),
    ("w2 fwd (a.W2^T)", lambda: gm(a, w2.transpose(-2, -1), offs=offs), D, I),
    ("w2 dgrad (dy.W2)", lambda: gm(y, w2, offs=offs), I, D),
    ("w13 dgrad (dh.W13)", lambda: gm(h13, w13, offs=offs), D, 2 * I),
    ("w2 wgrad", lambda: gm(y.t(), a, offs=offs), D, I),
    ("w13 wgrad", lambda: gm(h13.t(), x, offs=offs), 2 * I, D),
]
for name, fn, n, k in ops:
    try:
        ms = time_ms(fn)
        print(f"[grouped-gemm torch._grouped_mm] {name:22s} {ms:8.3f} ms {2.0 * M * n * k / (ms * 1e9):7.1f} TFLOP/s")
    except Exception as e:  # report and go on: shapes some versions refuse
        print(f"[grouped-gemm torch._grouped_mm] {name:22s} failed: {str(e)[:120]}")
