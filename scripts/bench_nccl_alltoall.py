"""NCCL all-to-all on the data of one RDEP dispatch, as a reference figure
(a measurement only, not a code path of nmoe).

Every rank sends tokens * top_k rows of dim BF16 values, split evenly over the
ranks (uniform routing), with one all_to_all_single, the way an all-to-all
design would dispatch them (its return would be the same exchange in reverse,
so one is timed). Prints one JSON line from rank 0: ms per exchange (slowest
rank), MB sent to other ranks per rank, and the GB/s per rank of that one
direction, comparable with `n bench rdep`'s dispatch figures.

Start one process per GPU:
  python3 -m torch.distributed.run --nproc_per_node W scripts/bench_nccl_alltoall.py --tokens 65536 --top-k 7 --dim 768
Needs PyTorch with NCCL (the GPU machine's python3); nmoe itself never does.
"""
import argparse
import json
import os

import torch
import torch.distributed as dist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--top-k", type=int, default=7)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    rank, world = dist.get_rank(), dist.get_world_size()
    per_peer = (a.tokens * a.top_k) // world  # rows to each rank, this rank included
    send = torch.randn(per_peer * world, a.dim, device="cuda", dtype=torch.bfloat16)
    recv = torch.empty_like(send)

    for _ in range(a.warmup):
        dist.all_to_all_single(recv, send)
    torch.cuda.synchronize()
    dist.barrier()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(a.iters):
        dist.all_to_all_single(recv, send)
    end.record()
    torch.cuda.synchronize()
    ms = torch.tensor([start.elapsed_time(end) / a.iters], device="cuda")
    dist.all_reduce(ms, op=dist.ReduceOp.MAX)
    remote_bytes = per_peer * (world - 1) * a.dim * 2
    if rank == 0:
        print(json.dumps({
            "bench": "nccl_all_to_all", "world": world, "tokens": a.tokens, "top_k": a.top_k, "dim": a.dim,
            "ms": ms.item(), "remote_mb_per_rank": remote_bytes / 1e6,
            "gb_per_s": remote_bytes / (ms.item() / 1e3) / 1e9,
        }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
