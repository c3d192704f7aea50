"""What a self-training run's evaluations say about the value model (bench/RESULTS.md,
"On the GPU"): per version, direct on the beam run's questions, the top-valued solution,
any of the solutions right, the value's AUC over all solutions, and where the solutions of
one question disagree, how often the top-valued one is right (chance: its share of right
ones). `python3 tools/train/beam_analysis.py OUT [DIRECT BEAM]`: OUT is a `tsst selftrain
--out` folder; DIRECT and BEAM name the eval configs' stems (default `direct`, `beam`)."""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def auc(pos, neg):
    """Mann-Whitney U over (value, right) pairs, ties averaged."""
    if not pos or not neg:
        return float("nan")
    values = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(values):
        j = i
        while j < len(values) and values[j][0] == values[i][0]:
            j += 1
        rank = (i + j + 1) / 2
        rank_sum += rank * sum(label for _, label in values[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def right(s):
    return bool(s["verdict"]["correct"])


def main():
    out = sys.argv[1]
    direct_stem, beam_stem = (sys.argv[2], sys.argv[3]) if len(sys.argv) > 3 else ("direct", "beam")
    for r in sorted(d for d in os.listdir(out) if d.startswith("r") and d[1:].isdigit()):
        ev = os.path.join(out, r, "eval")
        # Runs are named `<selftrain name>-<round>-<eval config stem>`.
        runs = os.listdir(ev) if os.path.isdir(ev) else []
        found = [[os.path.join(ev, d, "results.jsonl") for d in runs if d.endswith(f"-{r}-{stem}")]
                 for stem in (direct_stem, beam_stem)]
        if not all(found):
            continue
        d_path, b_path = found[0][0], found[1][0]
        direct = {q["question_id"]: bool(q["solutions"]) and right(q["solutions"][0]) for q in load(d_path)}
        beam = [q for q in load(b_path) if q["solutions"]]
        top = [right(max(q["solutions"], key=lambda s: s["value"])) for q in beam]
        mixed = [q for q in beam if 0 < sum(map(right, q["solutions"])) < len(q["solutions"])]
        mixed_top = sum(right(max(q["solutions"], key=lambda s: s["value"])) for q in mixed)
        chance = sum(sum(map(right, q["solutions"])) / len(q["solutions"]) for q in mixed)
        pos = [s["value"] for q in beam for s in q["solutions"] if right(s)]
        neg = [s["value"] for q in beam for s in q["solutions"] if not right(s)]
        distinct = sum(len({s["text"] for s in q["solutions"]}) for q in beam) / len(beam)
        print(json.dumps({
            "round": r,
            "questions": len(beam),
            "direct_on_these": round(sum(direct[q["question_id"]] for q in beam) / len(beam), 3),
            "beam_top_value": round(sum(top) / len(top), 3),
            "any_right": round(sum(any(map(right, q["solutions"])) for q in beam) / len(beam), 3),
            "value_auc": round(auc(pos, neg), 3),
            "mixed_questions": len(mixed),
            "mixed_top_value_right": mixed_top,
            "mixed_chance": round(chance, 1),
            "distinct_texts": round(distinct, 2),
        }))


if __name__ == "__main__":
    main()
