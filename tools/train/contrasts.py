"""Value warm-up contrasts drawn from the scene, for the synthetic benchmark: next to each
grounded chain's prefixes (`tsst warmup`'s warmup_value.json, valued k/n), the same
question's chains with one fact made false, valued 0. The value model then meets, for
one question and one image, right and wrong chains that differ the way a policy's
mistakes do (bench/RESULTS.md, "Can the value model learn to pick within a question?").

    python3 tools/train/contrasts.py runs/warm/warmup_value.json --out contrasts.json [--seed 0]

Per question, from its grounded chain "Step 1: ... Step 2: ... X. Final Answer: (L)"
(the answer X stated in step 2):
- step 1 with one word of the scene's vocabulary (a colour, shape, size or position)
  replaced by another of its kind;
- step 2 with the answer X replaced by another option Y wherever it is stated, alone
  and followed by "Final Answer: (Y's letter)": a consistent chain about a scene that
  is not the image's;
- step 2 with another word of the scene replaced, the answer kept;
- the whole chain as it is, then another option's letter as the final answer.
The output holds the warm-up records and these; records keep the warm-up's prompt and
image, so they train with `train.py --kind value` like Dv.
"""
import argparse
import json
import random
import re

KINDS = [
    ["red", "green", "blue", "yellow", "purple", "orange"],
    ["circle", "square", "triangle", "diamond", "star"],
    ["circles", "squares", "triangles", "diamonds", "stars"],
    ["small", "large"],
    ["left", "right"],
    ["top", "bottom"],
]


def options(human):
    """Letter -> option text, from the prompt's `Options:` lines."""
    tail = human.split("Options:", 1)[-1]
    return dict(re.findall(r"^([A-E])\. (.+)$", tail, flags=re.M))


def swap_one(text, rng, keep=()):
    """`text` with one scene word replaced by another of its kind; None if it has none."""
    spots = [(m, kind) for kind in KINDS for m in re.finditer(r"\b(" + "|".join(kind) + r")\b", text)
             if m.group(1) not in keep]
    if not spots:
        return None
    m, kind = rng.choice(spots)
    other = rng.choice([w for w in kind if w != m.group(1)])
    return text[:m.start()] + other + text[m.end():]


def contrasts(records, rng):
    by_question = {}
    for r in records:
        by_question.setdefault(r["id"].rsplit("/warmup/", 1)[0], []).append(r)
    out = []
    for qid, recs in by_question.items():
        recs.sort(key=lambda r: int(r["id"].rsplit("/", 1)[1]))
        full = recs[-1]
        chain = full["conversations"][1]["value"]
        m = re.match(r"^(Step 1: .*?\.) (Step 2: .*\.) (Final Answer: \(([A-E])\))$", chain)
        human = full["conversations"][0]
        opts = options(human["value"])
        if not m or m.group(4) not in opts:
            continue
        step1, step2, letter = m.group(1), m.group(2), m.group(4)
        answer = opts[letter]

        def record(tag, text):
            r = {"id": f"{qid}/contrast/{tag}", "conversations": [human, {"from": "gpt", "value": text}], "value": 0.0}
            if full.get("image") is not None:
                r["image"] = full["image"]
            return r

        false1 = swap_one(step1, rng)
        if false1:
            out.append(record("step1", false1))
        wrong = [(l, t) for l, t in opts.items() if l != letter]
        if wrong:
            l2, t2 = rng.choice(wrong)
            said = re.sub(r"\b" + re.escape(answer) + r"\b", t2, step2)
            if said != step2:
                out.append(record("answer-step", f"{step1} {said}"))
                out.append(record("answer", f"{step1} {said} Final Answer: ({l2})"))
            # The chain right to its last step and then another option's letter: the
            # demo policy's commonest mistake (bench/RESULTS.md, "What the demo policy gets
            # wrong"), checkable against the prompt's options alone.
            out.append(record("letter", f"{step1} {step2} Final Answer: ({l2})"))
        false2 = swap_one(step2, rng, keep=(answer,))
        if false2:
            out.append(record("step2", f"{step1} {false2}"))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("warmup_value", help="tsst warmup's warmup_value.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", help="keep only these kinds of false chain (comma-separated: step1, step2, "
                                    "answer-step, answer, letter)")
    a = ap.parse_args(argv)
    with open(a.warmup_value) as f:
        records = json.load(f)
    extra = contrasts(records, random.Random(a.seed))
    if a.kinds:
        kinds = set(a.kinds.split(","))
        extra = [r for r in extra if r["id"].rsplit("/", 1)[1] in kinds]
    with open(a.out, "w") as f:
        json.dump(records + extra, f)
    print(json.dumps({"warmup": len(records), "contrasts": len(extra), "out": a.out}))


if __name__ == "__main__":
    main()
