#!/usr/bin/env python3
"""Side-by-side summary of alternating timing rounds: reads the JSON lines that gpu_check
(impl smooth-topk-cubecl, one runtime per run: wgpu or cuda) and torch_ce_bench.py (impl
torch-cross-entropy) print, and for each runtime and shape gives the median over rounds of each
forward+backward time and their ratio; with gpu_check --plans, the same for each pinned launch
plan.

python3 scripts/gpu_compare.py ROUND_FILE...
"""

import json
import statistics
import sys


def main():
    ours, torch, plans, floors = {}, {}, {}, {}
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                if not line.startswith("JSON "):
                    continue
                row = json.loads(line[5:])
                # Files from before the runtime was named came from wgpu.
                runtime = row.get("runtime", "wgpu")
                if "n" not in row:
                    if "floor_forward_backward_ms" in row:
                        who = "torch" if row["impl"] == "torch-cross-entropy" else runtime
                        floors.setdefault(who, []).append(row["floor_forward_backward_ms"])
                    continue
                key = (row["n"], row["batch"])
                if row["impl"] == "smooth-topk-cubecl-plan":
                    if row.get("fell_back"):
                        continue  # the plan did not fit: the first plan ran
                    plans.setdefault((runtime, key, row["plan"]), []).append(
                        row["svm_forward_backward_ms"])
                elif row["impl"] == "smooth-topk-cubecl":
                    ours.setdefault((runtime, key), []).append(row["svm_forward_backward_ms"])
                elif row["impl"] == "torch-cross-entropy":
                    torch.setdefault(key, []).append(row["ce_forward_backward_ms"])
    for name, values in sorted(floors.items()):
        print(f"per-call floor, {name}: median {statistics.median(values):.4f} ms over "
              f"{len(values)} rounds")
    print(f"{'runtime':>7} {'n':>7} {'batch':>6} {'rounds':>6} {'svm f+b ms':>11} "
          f"{'torch ce f+b ms':>16} {'svm / ce':>9}")
    for (runtime, key) in sorted(ours):
        if key not in torch:
            continue
        a, b = statistics.median(ours[(runtime, key)]), statistics.median(torch[key])
        rounds = min(len(ours[(runtime, key)]), len(torch[key]))
        print(f"{runtime:>7} {key[0]:>7} {key[1]:>6} {rounds:>6} {a:>11.4f} {b:>16.4f} "
              f"{a / b:>9.3f}")
        print("JSON " + json.dumps({"runtime": runtime, "n": key[0], "batch": key[1],
                                    "rounds": rounds, "svm_forward_backward_ms": a,
                                    "torch_ce_forward_backward_ms": b, "ratio": a / b}))
    if plans:
        # gpu_check --plans: each launch plan pinned (the rows above are the autotuner's choice).
        print(f"{'runtime':>7} {'n':>7} {'batch':>6} {'plan':>20} {'rounds':>6} "
              f"{'svm f+b ms':>11} {'svm / ce':>9}")
        for (runtime, key, plan) in sorted(plans):
            if key not in torch:
                continue
            times = plans[(runtime, key, plan)]
            a, b = statistics.median(times), statistics.median(torch[key])
            rounds = min(len(times), len(torch[key]))
            print(f"{runtime:>7} {key[0]:>7} {key[1]:>6} {plan:>20} {rounds:>6} {a:>11.4f} "
                  f"{a / b:>9.3f}")
            print("JSON " + json.dumps({"runtime": runtime, "n": key[0], "batch": key[1],
                                        "plan": plan, "rounds": rounds,
                                        "svm_forward_backward_ms": a,
                                        "torch_ce_forward_backward_ms": b, "ratio": a / b}))


if __name__ == "__main__":
    main()
