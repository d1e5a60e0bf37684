"""Training-step throughput of jaxhw's CNNs against equivalent PyTorch nets, side by side.

    pip install -r benchmarks/requirements.txt
    python -m benchmarks.train_step --out benchmarks/results/train_step.json

For each net (SimpleCNN, a ResidualBlock stack, BetterNet with a 3x3 stem and stages of
64, 128 and 256 channels) both frameworks run an SGD-momentum cross-entropy step on the
same random batch: a warm-up step (JAX's compile time is reported separately), then
``--blocks`` timed blocks of ``--steps`` steps; the figure is the median images/s over the
blocks. JAX runs twice per net: "lax" with ``lax``'s convolution, ``flax``'s pooling and
XLA's default compile options, and "fast" with jaxhw's CPU versions (``jaxhw.ops``: a
phase-split input gradient and pooling without ``select_and_scatter``, with
``jaxhw.train.xla_options.cpu_conv_options``: XLA's built-in convolutions instead of
YNNPACK's). Prints the JAX/PyTorch ratio per net and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhw.models import BetterNet, ResidualBlock, SimpleCNN
from jaxhw import ops
from jaxhw.train import Trainer, make_train_step
from jaxhw.train.xla_options import cpu_conv_options
import flax.linen as nn


class ResidualStack(nn.Module):
    """stem conv 3->64 + BN + ReLU at 32x32, ResidualBlocks 64->64, 64->128 (/2),
    128->256 (/2), global average pool, dense 10."""

    conv: object = nn.Conv

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self.conv(64, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        for cin, cout, stride in ((64, 64, 1), (64, 128, 2), (128, 256, 2)):
            x = ResidualBlock(cin, cout, stride, conv=self.conv)(x, train)
        return nn.Dense(10)(x.mean(axis=(1, 2)))


def torch_nets():
    """The same three nets in PyTorch (NCHW)."""
    import torch
    from torch import nn as tnn

    class TSimple(tnn.Module):
        def __init__(self):
            super().__init__()
            self.f = tnn.Sequential(tnn.Conv2d(3, 8, 7), tnn.ReLU(), tnn.MaxPool2d(2),
                                    tnn.Conv2d(8, 16, 4), tnn.ReLU(), tnn.MaxPool2d(2),
                                    tnn.Flatten(), tnn.Linear(400, 100), tnn.ReLU(),
                                    tnn.Linear(100, 80), tnn.ReLU(), tnn.Linear(80, 10))

        def forward(self, x):
            return self.f(x)

    class TResidual(tnn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.c1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = tnn.BatchNorm2d(cout)
            self.c2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = tnn.BatchNorm2d(cout)
            self.short = tnn.Identity() if stride == 1 and cin == cout else tnn.Sequential(
                tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + self.short(x))

    def conv_bn(cin, cout, k):
        return tnn.Sequential(tnn.Conv2d(cin, cout, k, padding=k // 2), tnn.BatchNorm2d(cout),
                              tnn.ReLU())

    class TInception(tnn.Module):
        def __init__(self, cin, n1, n3b, n3, n5b, n5, pool):
            super().__init__()
            self.b1 = conv_bn(cin, n1, 1)
            self.b2 = tnn.Sequential(conv_bn(cin, n3b, 1), conv_bn(n3b, n3, 3))
            self.b3 = tnn.Sequential(conv_bn(cin, n5b, 1), conv_bn(n5b, n5, 5))
            self.b4 = tnn.Sequential(tnn.MaxPool2d(3, 1, 1), conv_bn(cin, pool, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    class TStack(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Conv2d(3, 64, 3, padding=1, bias=False),
                                       tnn.BatchNorm2d(64), tnn.ReLU())
            self.blocks = tnn.Sequential(TResidual(64, 64), TResidual(64, 128, 2),
                                         TResidual(128, 256, 2))
            self.fc = tnn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.blocks(self.stem(x)).mean((2, 3)))

    class TBetterNet(tnn.Module):  # stem 32, widths 64/128/256, blocks 0/1/1
        def __init__(self):
            super().__init__()
            self.f = tnn.Sequential(conv_bn(3, 32, 3), tnn.MaxPool2d(2),
                                    TInception(32, 16, 16, 32, 4, 8, 8),
                                    TResidual(64, 128, 2), TResidual(128, 256, 2))
            self.fc = tnn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.f(x).mean((2, 3)))

    return {"SimpleCNN": TSimple, "ResidualStack": TStack, "BetterNet": TBetterNet}


# (constructor taking jaxhw.ops.Layers, batch size); BetterNet with its module defaults.
NETS = {"SimpleCNN": (lambda o: SimpleCNN(conv=o.conv_module, max_pool=o.max_pool), 128),
        "ResidualStack": (lambda o: ResidualStack(conv=o.conv_module), 256),
        "BetterNet": (lambda o: BetterNet(blocks=(0, 1, 1), conv=o.conv_module,
                                          max_pool=o.max_pool),
                      128)}
# Default steps per timed block: enough that a block lasts ~0.5 s or more on a 2-core CPU
# (a SimpleCNN step takes ~10-20 ms, a ResidualStack step ~2-4 s).
STEPS = {"SimpleCNN": 40, "ResidualStack": 3, "BetterNet": 5}


def time_blocks(step, blocks: int, steps: int, batch: int) -> float:
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        step(steps)
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_jax(name: str, fast: bool, blocks: int, steps: int) -> tuple[float, float]:
    make, batch = NETS[name]
    layers = ops.layers("fast" if fast else "lax")
    trainer = Trainer(make(layers), optax.sgd(0.01, 0.9), log_every=1,
                      compiler_options=cpu_conv_options(layers.fast))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
    data = trainer.put(x, rng.integers(0, 10, batch))
    state = trainer.init_state(jax.random.key(0), x[:1])
    batches = jnp.arange(batch, dtype=jnp.int32)[None]
    step = make_train_step(trainer.model, trainer.tx, trainer.loss_fn, trainer.mesh,
                           trainer.preprocess, trainer.compiler_options)
    t0 = time.perf_counter()
    state, loss = step(state, data, batches, jnp.int32(0))
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0

    def run(n):
        nonlocal state
        for _ in range(n):
            state, loss = step(state, data, batches, jnp.int32(0))
        loss.block_until_ready()

    return time_blocks(run, blocks, steps, batch), compile_s


def bench_torch(name: str, blocks: int, steps: int) -> float:
    import torch

    _, batch = NETS[name]
    torch.manual_seed(0)
    net = torch_nets()[name]().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    run(1)  # warm-up
    return time_blocks(run, blocks, steps, batch)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nets", default=",".join(NETS), help="comma-separated nets to run")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per net")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"train steps per timed block (default per net: {STEPS})")
    parser.add_argument("--out", default="benchmarks/results/train_step.json",
                        help="where the JSON goes")
    args = parser.parse_args(argv)
    import torch

    rows = []
    print(f"{'net':<14} {'batch':>5} {'conv':>5} {'jax img/s':>10} {'torch img/s':>12} "
          f"{'ratio':>6} {'compile s':>9}")
    for name in args.nets.split(","):
        if name not in NETS:
            parser.error(f"unknown net {name!r}; choose from {list(NETS)}")
        steps = args.steps or STEPS[name]
        torch_rate = bench_torch(name, args.blocks, steps)
        for conv in ("lax", "fast"):
            jax_rate, compile_s = bench_jax(name, conv == "fast", args.blocks, steps)
            row = {"net": name, "batch": NETS[name][1], "steps_per_block": steps, "conv": conv,
                   "jax_images_per_s": jax_rate, "torch_images_per_s": torch_rate,
                   "ratio": jax_rate / torch_rate, "jax_compile_s": compile_s}
            rows.append(row)
            print(f"{name:<14} {row['batch']:>5} {conv:>5} {jax_rate:>10.1f} {torch_rate:>12.1f} "
                  f"{row['ratio']:>6.2f} {compile_s:>9.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} x "
                   f"{jax.devices()[0].device_kind}", "jax": jax.__version__,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "rows": rows},
        indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
