"""PyTorch training the models of `gradguard bench train`: the peer to beat.

    python3 benches/torch_train_peer.py [--device cuda] [--steps N] [--warmup W]
        [--threads K] [--seq-lens 30,200] [--max-norm 1.0] [--init-std 0.3]

Prints one JSON object shaped like `gradguard bench train --json` ("adapter", "backend",
"timing", "results": [{model, steps, steps_per_s, step_ms, ...}]) plus "peer", "torch",
"device" and "threads". The models, shapes, batch and optimizer are the lab's
(`gradguard::lab::exploding_mlp`, `exploding_rnn`):

  MLP/wine (lab default)  11 features → 8 × (Linear 64, ReLU) → Linear 6 classes,
                          cross-entropy, SGD lr 0.02 momentum 0.9
  RNN/adding T=…          ReLU RNN, 2 inputs per step, hidden 32, h0 = 0, Linear(32 → 1)
                          on the last hidden state, MSE, SGD lr 0.01 momentum 0.9; once as
                          torch.nn.RNN (input [T, B, 2]) and once as a torch.nn.RNNCell loop

Batch 64. A step: zero_grad(set_to_none=True), forward, loss, backward,
clip_grad_norm_(params, max_norm, foreach=True) (skipped with --max-norm 0), SGD step.
Data are synthetic batches (standard-normal features and random classes for wine, the
adding problem for the RNN) made on the device before timing. Weights: torch's default
init, or N(0, std) with zero biases (the lab's N(0, 0.3)) with --init-std. Timing: wall
clock over the timed steps, with torch.cuda.synchronize() at both ends on CUDA; by default
as many steps as fill about 2 s, judged by a probe after the warm-up.
"""

import argparse
import json
import math
import time

import torch
from torch import nn

BATCH = 64
POOL = 16  # distinct batches, cycled through
TARGET_S = 2.0


class Rnn(nn.Module):
    """The lab's RNN: `torch.nn.RNN` or a `torch.nn.RNNCell` loop, then a Linear head."""

    def __init__(self, cell, inputs=2, hidden=32):
        super().__init__()
        rnn = nn.RNNCell if cell else nn.RNN
        self.rnn = rnn(inputs, hidden, nonlinearity="relu")
        self.head = nn.Linear(hidden, 1)
        self.cell = cell

    def forward(self, x):  # x: [T, B, inputs]
        if self.cell:
            h = x.new_zeros(x.shape[1], self.rnn.hidden_size)
            for x_t in x:
                h = self.rnn(x_t, h)
        else:
            h = self.rnn(x)[1][-1]
        return self.head(h).squeeze(-1)


def rnn_name(steps):
    """The name `gradguard bench train` gives the same model."""
    return f"RNN/adding T={steps}" + (" (lab default)" if steps == 30 else "")


def mlp(inputs=11, depth=8, width=64, classes=6):
    layers = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def wine_batches(device, inputs=11, classes=6):
    """Standardized-looking features and class ids: [POOL, B, 11] and [POOL, B]."""
    x = torch.randn(POOL, BATCH, inputs, device=device)
    return x, torch.randint(0, classes, (POOL, BATCH), device=device)


def adding_batches(steps, device):
    """The adding problem (`gradguard::data::adding_problem`): [POOL, T, B, 2] and [POOL, B]."""
    first = torch.randint(0, steps // 2, (POOL, 1, BATCH), device=device)
    second = torch.randint(steps // 2, steps, (POOL, 1, BATCH), device=device)
    t = torch.arange(steps, device=device).view(1, steps, 1)
    marked = ((t == first) | (t == second)).float()
    values = torch.rand(POOL, steps, BATCH, device=device)
    return torch.stack([values, marked], -1), (values * marked).sum(1)


def measure(name, impl, model, loss_fn, data, lr, args, device):
    model = model.to(device)
    if args.init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.normal_(0.0, args.init_std)
                else:
                    p.zero_()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    xs, ys = data
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def run(steps):
        loss = None
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i % POOL]), ys[i % POOL])
            loss.backward()
            if args.max_norm > 0:
                nn.utils.clip_grad_norm_(params, args.max_norm, foreach=True)
            opt.step()
        sync()
        return loss

    def timed(steps):
        sync()
        t = time.perf_counter()
        loss = run(steps)
        return time.perf_counter() - t, loss

    run(args.warmup)
    steps = args.steps
    if steps <= 0:  # about TARGET_S, judged by a probe as long as the warm-up (past lazy init)
        probe = max(args.warmup, 1)
        steps = max(10, round(TARGET_S * probe / timed(probe)[0]))
    seconds, loss = timed(steps)
    loss = loss.item()
    return {
        "model": name,
        "impl": impl,
        "steps": steps,
        "steps_per_s": steps / seconds,
        "step_ms": 1e3 * seconds / steps,
        "final_loss": loss if math.isfinite(loss) else None,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=0, help="timed steps per model (0: about 2 s)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seq-lens", default="30,200", help="adding-problem lengths T")
    p.add_argument("--max-norm", type=float, default=1.0, help="clip_grad_norm_ bound (0: none)")
    p.add_argument("--init-std", type=float, help="N(0, std) weights (default: torch's init)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    results = [measure("MLP/wine (lab default)", "nn.Sequential", mlp(), nn.functional.cross_entropy,
                       wine_batches(device), 0.02, args, device)]
    for steps in map(int, args.seq_lens.split(",")):
        data = adding_batches(steps, device)
        for cell, impl in [(False, "nn.RNN"), (True, "nn.RNNCell loop")]:
            results.append(measure(rnn_name(steps), impl, Rnn(cell), nn.functional.mse_loss,
                                   data, 0.01, args, device))
    report = {
        "adapter": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backend": f"torch {torch.__version__} {device.type}",
        "timing": "wall",
        "peer": "gradguard bench train",
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
