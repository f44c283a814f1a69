"""PyTorch's own clipping on the sizes `gradguard bench` uses: the peer to beat.

    python3 benches/torch_clip_peer.py [--device cuda] [--elems N] [--segments K ...] [--reps R]

Prints one JSON object shaped like `gradguard bench --json` ("adapter", "backend",
"timing", "results": [{kernel, elements, segments, millis, gbytes_per_s, ratio_to_copy}]),
with the same data, segment sizes and byte counts, so the two can be set side by side:

  copy            dst.copy_(src) on one flat tensor: torch's roofline (read N + write N)
  norm_l2         torch.nn.utils.get_total_norm(grads, foreach=True)            (read N)
  clip_scale      torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)   (read N + write N)
  clip_grad_norm  torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True) (read N + write N)

max_norm sits just below the norm, so every element is scaled, as in `gradguard bench`.
Timing: CUDA events around `inner` calls (wall clock on CPU), one warm-up pass, median
of `reps` passes.
"""

import argparse
import json
import statistics
import time

import torch


def segment_lens(total, count):
    """`gradguard::bench::clip::segment_lens`: one segment, or `count` of mixed sizes."""
    count = max(count, 1)
    weights = [1 + ((i * 2_654_435_761) % 97) ** 2 for i in range(count)]
    lens = [total * w // sum(weights) for w in weights]
    lens[0] += total - sum(lens)
    return lens


def data(n, device):
    """`gradguard::bench::clip::data`: deterministic values in [-1, 1)."""
    i = torch.arange(n, dtype=torch.int64, device=device)
    return (((i * 2_654_435_761) >> 8) % 65_536).to(torch.float32) / 32_768.0 - 1.0


def total_norm(grads):
    """`torch.nn.utils.get_total_norm(grads, foreach=True)`; its body on torch < 2.6."""
    if hasattr(torch.nn.utils, "get_total_norm"):
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


def scale_by_norm(params, max_norm, norm):
    """`torch.nn.utils.clip_grads_with_norm_(..., foreach=True)`; its body on torch < 2.6."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        return torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    torch._foreach_mul_([q.grad for q in params], coef)


def timer(device):
    """Milliseconds per call of `fn` over `inner` calls, median of `reps` passes."""

    def one_pass(fn, inner):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / inner
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t) * 1e3 / inner

    def median(fn, reps, inner):
        one_pass(fn, inner)
        return statistics.median(one_pass(fn, inner) for _ in range(reps))

    return median


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--elems", type=int, default=1 << 24)
    p.add_argument("--segments", type=int, action="append")
    p.add_argument("--reps", type=int, default=11)
    args = p.parse_args()
    device = torch.device(args.device)
    n = args.elems // 4 * 4
    nbytes = 4 * n
    # As `gradguard bench`: enough calls per pass that launch overheads vanish (~4 GB).
    inner = max(1, min(50, (4 << 30) // (nbytes * 2)))
    time_ms = timer(device)
    values = data(n, device)
    results = []

    def push(kernel, segments, millis, traffic, copy_rate):
        rate = traffic / (millis * 1e6)
        results.append(
            {
                "kernel": kernel,
                "elements": n,
                "segments": segments,
                "millis": millis,
                "gbytes_per_s": rate,
                "ratio_to_copy": rate / copy_rate if copy_rate else 1.0,
            }
        )
        return rate

    dst = torch.empty_like(values)
    copy_rate = push("copy", 1, time_ms(lambda: dst.copy_(values), args.reps, inner), 2 * nbytes, None)
    for count in args.segments or [1, 1000]:
        flat = values.clone()
        params = []
        for piece in torch.split(flat, segment_lens(n, count)):
            param = torch.nn.Parameter(torch.empty_like(piece))
            param.grad = piece  # views into `flat`: one allocation, like a packed GradSet
            params.append(param)
        grads = [q.grad for q in params]
        norm = total_norm(grads)
        max_norm = float(norm) * 0.9999
        get_norm = lambda: total_norm(grads)
        scale = lambda: scale_by_norm(params, max_norm, norm)
        clip = lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        push("norm_l2", count, time_ms(get_norm, args.reps, inner), nbytes, copy_rate)
        push("clip_scale", count, time_ms(scale, args.reps, inner), 2 * nbytes, copy_rate)
        push("clip_grad_norm", count, time_ms(clip, args.reps, inner), 2 * nbytes, copy_rate)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {
        "adapter": name,
        "backend": f"torch {torch.__version__} {device.type}",
        "timing": "cuda events" if device.type == "cuda" else "wall",
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
