import json, sys
skip = {}
for part in ("3m", "1m"):
    try:
        for r in json.load(open(f"/work/suite_skip/out/{part}/results.json"))["rows"]:
            skip[r["task"]] = r
    except FileNotFoundError:
        pass
base = {r["task"]: r for r in json.load(open("/work/main/docs/results/popgym-easy-preset-2026-12-07/results.json"))["rows"]}
print("| task | the preset (seeds 1, 2) | the preset + `skip_core` (seeds 1, 2) | published PPO-GRU | memoryless best |")
print("|---|---|---|---|---|")
for task in sorted(base):
    b = base[task]; s = skip.get(task)
    fmt = lambda r: f"{r['best_return_mean']:.3f} ({', '.join(f'{x:.3f}' for x in r['best_returns'])})"
    if task == "popgym/ConcentrationEasy":
        sk = "0.380 (seed 1, 3M steps; the section above)"
    else:
        sk = fmt(s) if s else "-"
    pub = f"{b['published_ppo_gru']:.3f}" if b.get("published_ppo_gru") is not None else "-"
    print(f"| {task} | {fmt(b)} | {sk} | {pub} | {b['memoryless_return']:.3f} |")
