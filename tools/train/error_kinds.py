"""What a run's wrong solutions got wrong, on the synthetic benchmark: per solution,
- `letter`: step 2 concludes on the right option but the final letter is another one's (the
  chain is right up to its last token; the letter must be looked up in the prompt's
  options);
- `perception`: a step states something that is not a fact of the scene (the verdict's
  `grounded` is false) and step 2 does not conclude on the right option;
- `reasoning`: every step is a fact of the scene, yet step 2 concludes on another option;
- `no-letter`: no `Final Answer: (X)`.

    python3 tools/train/error_kinds.py RUN/results.jsonl [--first]

`--first`: only each question's first solution (a direct run has one).

A second line tells whether the answer follows the chain: the solutions counted by
whether step 2 concludes on the right option and whether the letter is right (if the two
are independent, a value model that checks the chain cannot pick the answer), how many
letters are the option step 2 concludes on (`consistent`), and the accuracy of a
majority vote over each question's solutions against one over its consistent ones.
"""
import argparse
import collections
import json
import re

LETTER = re.compile(r"Final Answer:\s*\(([A-E])\)")


def kind(question, solution):
    if solution["verdict"]["correct"]:
        return "right"
    if not LETTER.search(solution["text"]):
        return "no-letter"
    if concluded(question, solution["text"]) == "ABCDE"[question["answer"]]:
        return "letter"
    return "reasoning" if solution["verdict"].get("grounded") else "perception"


def concluded(question, text):
    """The letter of the option that step 2 names last (its conclusion), or None."""
    step2 = text.split("Final Answer")[0].split("Step 2:")[-1]
    last = None
    for i, option in enumerate(question["choices"]):
        for m in re.finditer(r"\b" + re.escape(option) + r"\b", step2, re.IGNORECASE):
            if last is None or m.start() > last[0]:
                last = (m.start(), "ABCDE"[i])
    return last and last[1]


def majority(letters):
    counts = collections.Counter(x for x in letters if x)
    return counts.most_common(1)[0][0] if counts else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--first", action="store_true")
    a = ap.parse_args(argv)
    counts, coupling = collections.Counter(), collections.Counter()
    questions = 0
    with open(a.results) as f:
        for line in f:
            q = json.loads(line)
            answer = "ABCDE"[q["answer"]]
            letters, consistent = [], []
            for s in q["solutions"][:1] if a.first else q["solutions"]:
                counts[kind(q, s)] += 1
                m = LETTER.search(s["text"])
                letters.append(m and m.group(1))
                step2 = concluded(q, s["text"])
                coupling[f"step2 {'right' if step2 == answer else 'wrong'}, letter "
                         f"{'right' if letters[-1] == answer else 'wrong'}"] += 1
                if letters[-1] and letters[-1] == step2:
                    consistent.append(letters[-1])
            questions += 1
            coupling["vote right"] += majority(letters) == answer
            coupling["consistent vote right"] += majority(consistent or letters) == answer
            coupling["consistent"] += len(consistent)
    total = sum(counts.values())
    wrong = total - counts["right"]
    print(json.dumps({"solutions": total, "right": counts["right"], "wrong": wrong,
                      "wrong_by_kind": {k: v for k, v in counts.most_common() if k != "right"}}))
    print(json.dumps({"questions": questions, **dict(sorted(coupling.items()))}))


if __name__ == "__main__":
    main()
