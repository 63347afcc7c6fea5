"""Where a default training step spends its time: drawing the batch, the model's forward and
backward, the optimiser and weight average; the top operators; and on a GPU how often the
host waits for the device.

Made for the first session with a GPU after session 11 found training host-bound there
(308K samples/s at MovieLens-20M's shape on an H200, about one CPU core's speed). One run,
a few minutes:

    python benchmarks/profile_step.py --device cuda [--positives 1000000] [--steps 150]

It trains ``hybrid`` with every default (``fit``, the batch size the data's size chooses)
on synthetic power-law positives of ``--shape`` and profiles ``--steps`` steps after
``--skip`` warm-up steps with ``torch.profiler``. The ``hybridrec.*`` rows of the first
table split a step into its parts (wall time on the host); the second lists the operators
by their own host time, and on CUDA a third by device time. ``cudaStreamSynchronize``,
``cudaMemcpy*`` and ``aten::item``/``aten::nonzero`` rows count the host's waits.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_scale import SHAPES, check_trained_on, encoded, power_law_positives
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from hybridrec import TrainConfig, fit
from hybridrec.models import build_model
from hybridrec.objectives.pointwise import Pointwise
from hybridrec.training import loop


class _Stop(Exception):
    """Raised after the profiled steps: the rest of the epoch is not needed."""


def instrument(prof: profile, total_steps: int) -> None:
    """Label the parts of a step for the profiler, step it, and stop after the last step."""
    batches, step, optimise = Pointwise.batches, Pointwise.step, loop._Loop.optimise
    done = [0]

    def labelled_batches(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        iterator = batches(self, *args, **kwargs)
        while True:
            with record_function("hybridrec.next_batch"):
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch

    def labelled_step(self, model, batch):  # noqa: ANN001, ANN202
        with record_function("hybridrec.forward"):
            return step(self, model, batch)

    def labelled_optimise(self, loss):  # noqa: ANN001, ANN202
        with record_function("hybridrec.backward_and_optimise"):
            optimise(self, loss)
        prof.step()
        done[0] += 1
        if done[0] >= total_steps:
            raise _Stop

    Pointwise.batches = labelled_batches  # type: ignore[method-assign]
    Pointwise.step = labelled_step  # type: ignore[method-assign]
    loop._Loop.optimise = labelled_optimise  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="ml20m", choices=sorted(SHAPES))
    parser.add_argument("--positives", type=int, default=1_000_000)
    parser.add_argument("--skip", type=int, default=20, help="warm-up steps not profiled")
    parser.add_argument(
        "--steps", type=int, default=150, help="steps profiled (>= one sampler chunk)"
    )
    parser.add_argument("--rows", type=int, default=25, help="operators listed")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    num_users, num_items = SHAPES[args.shape]
    data = encoded(power_law_positives(num_users, num_items, args.positives), num_users, num_items)
    torch.manual_seed(0)
    model = build_model("hybrid", num_users=num_users + 1, num_items=num_items + 1)
    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    config = TrainConfig(epochs=1, early_stop="none", device=args.device, compile=args.compile)
    with profile(
        activities=activities, schedule=schedule(wait=args.skip, warmup=2, active=args.steps)
    ) as prof:
        instrument(prof, args.skip + 2 + args.steps)
        start = time.perf_counter()
        try:
            fit(model, data, None, config, show_progress=False)
        except _Stop:
            pass
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    check_trained_on(model, args.device)
    where = torch.cuda.get_device_name(0) if cuda else "CPU, 1 thread"
    compiled = ", compiled" if args.compile else ""
    print(f"# {where}, torch {torch.__version__}, shape {args.shape}, "
          f"{args.positives:,} positives{compiled}; {args.skip + 2 + args.steps} steps in "
          f"{seconds:.1f} s "
          f"(data loading and setup included)")  # fmt: skip
    events = prof.key_averages()
    parts = [e for e in events if e.key.startswith("hybridrec.")]
    print("\n| part of a step | calls | host ms per step |\n|---|---|---|")
    for e in sorted(parts, key=lambda e: -e.cpu_time_total):
        print(f"| {e.key} | {e.count} | {e.cpu_time_total / 1e3 / args.steps:.2f} |")
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if cuda:
        print(events.table(sort_by=sort, row_limit=args.rows))


if __name__ == "__main__":
    main()
