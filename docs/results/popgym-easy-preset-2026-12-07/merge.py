"""Merge the benchmark folders of a suite split over processes into one results.json, results.md and curves.png,
rebuilding each task's row with the package's own code from the parts' per-seed figures and curves."""
import json, sys
from pathlib import Path
from recurrent_ppo.benchmark import SeedRun, TaskResult, markdown_table, plot_curves

out, seconds, parts = Path(sys.argv[1]), float(sys.argv[2]), [Path(p) for p in sys.argv[3:]]
results = []
for part in parts:
    data = json.loads((part / "results.json").read_text())
    for row in data["rows"]:
        runs = [SeedRun(seed=c["seed"], final_return=final, steps=c["steps"], seconds=c["seconds"], returns=c["returns"],
                        sps=row["sps"], train_return=row["train_return_mean"], sampled_return=row["sampled_return_mean"])
                for c, final in zip(data["curves"][row["task"]], row["final_returns"])]
        results.append(TaskResult(row["task"], runs, row["memoryless_return"]))
results.sort(key=lambda result: result.task)
rows = [result.row() for result in results]
curves = {r.task: [{"seed": s.seed, "steps": s.steps, "seconds": s.seconds, "returns": s.returns} for s in r.runs]
          for r in results}
out.mkdir(parents=True, exist_ok=True)
(out / "results.json").write_text(json.dumps({"rows": rows, "curves": curves, "seconds": seconds}, indent=1))
table = markdown_table(rows) + f"\n{sum(len(r.runs) for r in results)} runs in {seconds:,.0f} s of wall-clock.\n"
(out / "results.md").write_text(table)
plot_curves(results, out / "curves.png")
print(table)
