"""What a run's wrong solutions got wrong, on the synthetic benchmark: per solution,
- `letter`: step 2 names the right option but the final letter is another one's (the
  chain is right up to its last token; the letter must be looked up in the prompt's
  options);
- `perception`: a step states something that is not a fact of the scene (the verdict's
  `grounded` is false) and step 2 does not name the right option;
- `reasoning`: every step is a fact of the scene, yet step 2 names another option;
- `no-letter`: no `Final Answer: (X)`.

    python3 tools/train/error_kinds.py RUN/results.jsonl [--first]

`--first`: only each question's first solution (a direct run has one).
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
    step2 = solution["text"].split("Final Answer")[0].split("Step 2:")[-1]
    right = question["choices"][question["answer"]]
    if re.search(r"\b" + re.escape(right) + r"\b", step2):
        return "letter"
    return "reasoning" if solution["verdict"].get("grounded") else "perception"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--first", action="store_true")
    a = ap.parse_args(argv)
    counts = collections.Counter()
    with open(a.results) as f:
        for line in f:
            q = json.loads(line)
            for s in q["solutions"][:1] if a.first else q["solutions"]:
                counts[kind(q, s)] += 1
    total = sum(counts.values())
    wrong = total - counts["right"]
    print(json.dumps({"solutions": total, "right": counts["right"], "wrong": wrong,
                      "wrong_by_kind": {k: v for k, v in counts.most_common() if k != "right"}}))


if __name__ == "__main__":
    main()
