"""pyoptim.torch against torch's fused optimizer on the parameters of a small transformer.

    python bench/bench_torch_model.py [--optimizer adam] [--layers 16] [--d-model 64]
                                      [--vocab 2048] [--ctx 256] [--threads 1] [--repeats 50]

The model is a real torch.nn.Module, GPT-shaped: token and position embeddings, then per layer a
LayerNorm, q, k, v and o projections (with biases), a LayerNorm and a 4x MLP (with biases), and a
final LayerNorm (the output head tied to the embedding): 16 tensors per layer, most of them
small. Its float32 parameters, with gradients, are stepped by (interleaved step by step, median
of the repeats after a warm-up):

  torch-fused     torch.optim.<Optimizer>(params, fused=True)
  pyoptim.torch   pyoptim.torch.<Optimizer>(params)
  pyoptim-flat    pyoptim.<Optimizer> over one NumPy buffer of as many elements: the floor,
                  a step without per-tensor work
  torch-foreach   torch.optim.<Optimizer>(params, foreach=True) (--foreach)

Before each step the gradients are replaced by other tensors (two sets, alternating), as after
zero_grad() and backward(): no contestant can keep anything from the last step's gradients. Before
timing, pyoptim.torch's step is validated against pyoptim.reference (3 steps, every param and
state buffer, bit for bit), and torch fused's distance from it is reported. GB/s counts the bytes
of the update (Adam/AdamW: 28 per element: read p, g, m, v, write p, m, v; SGD with momentum:
20), next to an Adam-shaped NumPy in-place pass measured in the same run (bench_many.py).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

import pyoptim
import pyoptim.torch
from bench_many import _bandwidth

OPTIMIZERS = {  # name: (torch and pyoptim class, hyperparameters, bytes per element, states)
    "adam": ("Adam", dict(lr=1e-3), 28, ("exp_avg", "exp_avg_sq")),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=0.1), 28, ("exp_avg", "exp_avg_sq")),
    "sgd": ("SGD", dict(lr=1e-2, momentum=0.9), 20, ("momentum_buffer",)),
    "adagrad": ("Adagrad", dict(lr=1e-2), 20, ("sum",)),
}


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)


class Transformer(nn.Module):
    """The parameters of a GPT-style decoder (the forward pass is not needed here)."""

    def __init__(self, layers, d, vocab, ctx):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)


def _model_params(args, seed=0):
    torch.manual_seed(seed)
    return list(Transformer(args.layers, args.d_model, args.vocab, args.ctx).parameters())


def _grad_sets(params, count=2):
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=g) for p in params] for _ in range(count)]


def _validate(args, cls, hp, states):
    """pyoptim.torch against pyoptim.reference, bit for bit, over 3 steps; returns torch fused's
    largest relative distance from the reference's params."""
    params = _model_params(args)
    fused_params = [nn.Parameter(p.detach().clone()) for p in params]
    copies = [p.detach().numpy().copy() for p in params]
    ref_states = [{name: np.zeros_like(c) for name in states} for c in copies]
    opt = getattr(pyoptim.torch, cls)(params, **hp)
    fused = getattr(torch.optim, cls)(fused_params, **hp, fused=True)
    function = getattr(pyoptim.reference, cls.lower())
    for t, grads in enumerate(_grad_sets(params, 3), start=1):
        for p, q, g in zip(params, fused_params, grads):
            p.grad, q.grad = g, g.clone()
        opt.step()
        fused.step()
        for c, g, s in zip(copies, grads, ref_states):
            kwargs = {} if cls == "SGD" else {"step": t}
            function(c, g.numpy(), **s, **kwargs, **hp)
    for i, (p, c, s) in enumerate(zip(params, copies, ref_states)):
        if not np.array_equal(p.detach().numpy(), c):
            raise SystemExit(f"validation failed: params[{i}] differs from the reference")
        for name in states:
            if not np.array_equal(opt.state[p][name].numpy(), s[name]):
                raise SystemExit(f"validation failed: {name} of params[{i}] differs")
    return max(float(np.max(np.abs(q.detach().numpy() - c) / (np.abs(c) + 1e-30)))
               for q, c in zip(fused_params, copies))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--ctx", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--foreach", action="store_true", help="also time torch's foreach step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyoptim.set_num_threads(args.threads)
    cls, hp, bytes_per_element, states = OPTIMIZERS[args.optimizer]
    if cls == "SGD":
        states = ("momentum_buffer",)

    distance = _validate(args, cls, hp, states)

    grad_sets = {}
    steps = {}

    def torch_contestant(name, **flags):
        params = _model_params(args)
        grad_sets[name] = _grad_sets(params)
        steps[name] = getattr(torch.optim, cls)(params, **hp, **flags)

    torch_contestant("torch-fused", fused=True)
    params = _model_params(args)
    grad_sets["pyoptim.torch"] = _grad_sets(params)
    steps["pyoptim.torch"] = getattr(pyoptim.torch, cls)(params, **hp)
    if args.foreach:
        torch_contestant("torch-foreach", foreach=True)
    n = sum(p.numel() for p in params)
    flat = getattr(pyoptim, cls)(np.zeros(n, np.float32), **hp)
    flat_grads = [np.random.default_rng(2).standard_normal(n).astype(np.float32)
                  for _ in range(2)]

    def timed(name, k):
        if name == "pyoptim-flat":
            grads = flat_grads[k % 2]
            t = time.perf_counter()
            flat.step(grads)
            return time.perf_counter() - t
        opt = steps[name]
        for p, g in zip((p for group in opt.param_groups for p in group["params"]),
                        grad_sets[name][k % 2]):
            p.grad = g
        t = time.perf_counter()
        opt.step()
        return time.perf_counter() - t

    names = list(steps) + ["pyoptim-flat"]
    times = {name: [] for name in names}
    for k in range(5):  # warm-up
        for name in names:
            timed(name, k)
    for k in range(args.repeats):
        for name in names:
            times[name].append(timed(name, k))
    bandwidth = _bandwidth(n, 10)

    median = {name: statistics.median(ts) for name, ts in times.items()}
    tensors = len(params)
    print(f"{cls} {hp}, float32: a transformer of {args.layers} layers, d_model {args.d_model}, "
          f"vocab {args.vocab}, ctx {args.ctx}: {tensors} tensors, {n} elements "
          f"({n / tensors:.0f} per tensor on average); torch {torch.__version__}, "
          f"{args.threads} thread(s), median of {args.repeats}; simd: "
          f"{pyoptim._cpu.core().simd_target()}")
    print("validated: pyoptim.torch equals pyoptim.reference bit for bit over 3 steps; torch "
          f"fused is within a relative {distance:.1e} of it")
    print(f"NumPy in-place Adam-shaped pass: {bandwidth:.1f} GB/s")
    print(f"{'contestant':<14} {'ms/step':>9} {'GB/s':>7} {'% of NumPy':>10} "
          f"{'us/tensor over flat':>20} {'torch-fused / this':>19}")
    for name in names:
        t = median[name]
        gbs = n * bytes_per_element / t / 1e9
        over = (t - median["pyoptim-flat"]) / tensors * 1e6
        print(f"{name:<14} {t * 1e3:9.3f} {gbs:7.1f} {100 * gbs / bandwidth:9.0f}% "
              f"{over if name != 'pyoptim-flat' else float('nan'):20.2f} "
              f"{median['torch-fused'] / t:18.2f}x")


if __name__ == "__main__":
    main()
