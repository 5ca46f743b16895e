"""Fine-tunes a small transformer twice from the same weights, with zoro.torch.AdamW and with
torch.optim.AdamW, and compares loss curves, step times and GPU memory (issue #9's GPU check).

    PYTHONPATH=build/python_stub /usr/bin/python3 python_stub/examples/finetune_compare.py \
        [--device cuda] [--steps 200] [--dim 512] [--layers 6] [--dtype bf16] [--json FILE]

On CUDA the model's weights are --dtype (bf16 by default) and zoro keeps the fp32 masters and
moments in pinned host memory; torch.optim.AdamW runs on fp32 weights on the GPU (the usual
baseline, all state on the device). On CPU both run in fp32. Step times are measured around
the whole step (forward, backward, optimizer) after synchronising the device, the first
--warmup steps left out.
"""

import argparse
import json
import math
import statistics
import time

import torch

import zoro
import zoro.torch


def make_model(args, seed):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(args.dim, args.heads, 4 * args.dim, dropout=0.0,
                                             batch_first=True, norm_first=True)
    body = torch.nn.TransformerEncoder(layer, args.layers)
    return torch.nn.ModuleDict({"embed": torch.nn.Embedding(args.vocab, args.dim), "body": body,
                                "head": torch.nn.Linear(args.dim, args.vocab)})


def forward(model, tokens, mask):
    h = model["body"](model["embed"](tokens), mask=mask)
    return model["head"](h).float()


def run(args, which, data):
    dev = torch.device(args.device)
    model = make_model(args, args.seed).to(dev)
    if dev.type == "cuda" and which == "zoro":
        model = model.to(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    if which == "zoro":
        opt = zoro.torch.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(args.seq).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    losses, times = [], []
    for step, (x, y) in enumerate(data):
        x, y = x.to(dev), y.to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = forward(model, x, mask.to(next(model.parameters()).dtype))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, args.vocab), y.reshape(-1))
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if step >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
        losses.append(loss.item())
    out = {"optimizer": which, "losses": losses, "step_ms_median": statistics.median(times),
           "step_ms_mean": statistics.fmean(times)}
    if dev.type == "cuda":
        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated(dev)
    if which == "zoro":
        out["pinned_in_use_bytes"] = opt.pinned_stats().in_use_bytes
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])  # fp16 needs a GradScaler
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()

    # A learnable task: the next token is a fixed function of the current one.
    g = torch.Generator().manual_seed(args.seed + 1)
    perm = torch.randperm(args.vocab, generator=g)
    data = []
    for _ in range(args.steps):
        x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
        data.append((x, perm[x]))

    results = [run(args, which, data) for which in ("torch", "zoro")]
    torch_r, zoro_r = results
    params = sum(p.numel() for p in make_model(args, args.seed).parameters())
    print(f"{params / 1e6:.2f}M parameters, {args.steps} steps on {args.device}, "
          f"zoro {zoro.cpu_isa()}")
    print(f"{'optimizer':<10}{'first loss':>12}{'last loss':>12}{'step ms':>10}{'GPU peak MiB':>14}")
    for r in results:
        peak = r.get("gpu_peak_bytes")
        print(f"{r['optimizer']:<10}{r['losses'][0]:>12.4f}{r['losses'][-1]:>12.4f}"
              f"{r['step_ms_median']:>10.2f}{(peak / 2**20 if peak else math.nan):>14.1f}")
    gap = max(abs(a - b) for a, b in zip(torch_r["losses"], zoro_r["losses"]))
    print(f"largest loss difference over the run: {gap:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "parameters": params, "results": results,
                       "max_loss_gap": gap}, f, indent=1)


if __name__ == "__main__":
    main()
