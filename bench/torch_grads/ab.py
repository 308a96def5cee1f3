"""pyoptim.torch's step with its grads read in Python (as shipped) and by reader.cpp (C++), on
the parameter list of `pyoptim bench`'s gpt-tiny, one thread; torch fused in the same rounds.
Both readers are first checked to give the same addresses. A second optimizer with the shipped
reader (control) shows how much two optimizers over different memory differ by themselves.
Prints the readers' own times (in a loop: their tensors in cache) and the step times, as
medians of per-round ratios, round robin.

    bash bench/torch_grads/run.sh [rounds]
"""

import inspect
import sys
import time

import numpy as np
import torch

import pyoptim
import pyoptim.torch as pt
from pyoptim._optimizer import GradAddresses
from pyoptim.bench._cells import MODELS

import reader

NAMES = ("grad", "data_ptr", "dtype", "numel", "is_contiguous", "is_neg", "is_cpu")


def accessors() -> tuple:
    found = [inspect.getattr_static(torch.Tensor, name) for name in NAMES]
    assert all(inspect.getattr_static(torch.nn.Parameter, n) is a for n, a in zip(NAMES, found))
    return (torch.Tensor, torch.nn.Parameter, *found)


def model_params() -> list:
    params = [torch.nn.Parameter(torch.randn(shape)) for _, shape in MODELS["gpt-tiny"]]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return params


def per_call(f, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - start) / calls


def main(rounds: int) -> None:
    torch.set_num_threads(1)
    pyoptim.set_num_threads(1)
    for name, options in (("Adam", {}), ("AdamW", {}), ("SGD", {"momentum": 0.9})):
        shipped = getattr(pt, name)(model_params(), lr=1e-3, **options)
        control = getattr(pt, name)(model_params(), lr=1e-3, **options)  # shipped too: A/A
        in_cpp = getattr(pt, name)(model_params(), lr=1e-3, **options)
        torch_fused = getattr(torch.optim, name)(model_params(), lr=1e-3, fused=True, **options)
        engine = in_cpp._engine
        read = reader.TensorGrads(list(engine._params), in_cpp._pointers, in_cpp._dtypes,
                                  in_cpp._numels, accessors())
        in_cpp._grad_addresses = lambda: GradAddresses(*read())
        a, b = shipped._grad_addresses(), in_cpp._grad_addresses()
        assert [x != 0 for x in a.addresses] == [x != 0 for x in b.addresses]
        assert b.addresses == [p.grad.data_ptr() for p in engine._params]
        for _ in range(5):
            shipped.step(), control.step(), in_cpp.step(), torch_fused.step()
        readers = [("python", shipped._grad_addresses), ("control", control._grad_addresses),
                   ("c++", in_cpp._grad_addresses)]
        stepping = [("python", shipped.step), ("control", control.step), ("c++", in_cpp.step),
                    ("torch", torch_fused.step)]
        reads = {key: [] for key, _ in readers}
        steps = {key: [] for key, _ in stepping}
        for r in range(rounds):  # round robin, the order rotated every round
            k = r % len(readers)
            for key, f in readers[k:] + readers[:k]:
                reads[key].append(per_call(f, 200))
            k = r % len(stepping)
            for key, f in stepping[k:] + stepping[:k]:
                steps[key].append(per_call(f, 30))
        r = {k: np.asarray(v) for k, v in reads.items()}
        s = {k: np.asarray(v) for k, v in steps.items()}

        def ratio(table, a, b):
            return np.median(table[a] / table[b])

        print(f"{name} ({len(engine._params)} tensors): reading the grads alone, python "
              f"{np.median(r['python']) * 1e6:.0f} us, c++ {np.median(r['c++']) * 1e6:.0f} us "
              f"(c++/python {ratio(r, 'c++', 'python'):.2f}, control/python "
              f"{ratio(r, 'control', 'python'):.2f}); step time, c++/python "
              f"{ratio(s, 'c++', 'python'):.3f}, control/python "
              f"{ratio(s, 'control', 'python'):.3f}; torch fused / pyoptim.torch: python "
              f"{ratio(s, 'torch', 'python'):.2f}x, c++ {ratio(s, 'torch', 'c++'):.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
