"""The README's study table, printed from the committed results (experiments/results/<tier>.json).

    python experiments/table.py
"""
import json
import os

RES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
NAMES = {"var": "VAR", "mvar": "M-VAR"}


def pm(v, fmt):
    return f"{fmt.format(v[0])} ± {fmt.format(v[1])}"


def main():
    print("| tier | command | 2-core wall time | model (params) | FD-cls ↓ (floor) | KID (raw) ↓ | precision / recall | "
          "cond. acc. | train img/s | sample img/s B1 / B64 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for tier in ("digits", "fashion", "emoji"):
        path = os.path.join(RES, f"{tier}.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        floor = r["runs"][0]["floor"]
        minutes = (r["tokenizer"]["train_seconds"] + sum(x["train_seconds"] for x in r["runs"]) / 2) / 60
        seeds = len(r["summary_mean_std"]["var"]["seeds"])
        for i, (m, s) in enumerate(r["summary_mean_std"].items()):
            head = (f"| {tier} ({r['dataset']}, N = {r['runs'][0]['N']}, {seeds} seed{'s' * (seeds > 1)}) | "
                    f"`{r['command']}` | ~{minutes:.0f} min |") if i == 0 else "| | | |"
            print(f"{head} {NAMES[m]} ({s['params'] / 1e6:.2f}M) | {pm(s['fd_cls'], '{:.2f}')} ({floor['fd_cls']:.2f}) | "
                  f"{pm(s['kid'], '{:.3f}')} | {s['precision'][0]:.3f} / {s['recall'][0]:.3f} | "
                  f"{s['cond_acc'][0] * 100:.1f}% | {s['train_img_per_s'][0]:.0f} | "
                  f"{s['sample_img_per_s_b1'][0]:.1f} / {s['sample_img_per_s_b64'][0]:.0f} |")


if __name__ == "__main__":
    main()
