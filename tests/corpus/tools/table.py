"""The corpus as tables (client x scenario -> verdict), for docs/conformance.md.

    python tests/corpus/tools/table.py   # prints markdown
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402


def verdict(scenario):
    refusals = sorted({ex["verdict"][7:] for c in scenario["connections"] for ex in c["exchanges"]
                       if ex["verdict"] != "same"})
    text = "refused: " + " / ".join(refusals) if refusals else "same"
    if scenario.get("xfail"):
        text += f" (xfail: {scenario['xfail']})"
    return text.replace("|", "\\|")


def requests(scenario):
    return sum(len(c["exchanges"]) for c in scenario["connections"])


def main():
    found = dict(corpus.scenarios())
    out = []
    cli = sorted({n.split("-", 1)[1] for n in found if n.startswith(("cli20-", "cli28-"))})
    v20 = next((s.get("client_version") for n, s in found.items() if n.startswith("cli20-")), "")
    v28 = next((s.get("client_version") for n, s in found.items() if n.startswith("cli28-")), "")
    out += ["## The docker CLI's everyday set", "",
            f"| scenario | what the client ran | CLI {v20} (/usr/bin/docker) | CLI {v28} (/usr/local/bin/docker) |",
            "|---|---|---|---|"]
    for name in cli:
        a, b = found.get("cli20-" + name), found.get("cli28-" + name)
        what = (a or b)["what"]
        out.append(f"| {name} | {what} | {verdict(a) if a else '—'} | {verdict(b) if b else '—'} |")
    out += ["", "## Other clients", "", "| scenario | client | version | what | verdict |", "|---|---|---|---|---|"]
    for name, s in found.items():
        if name.startswith(("cli20-", "cli28-", "edge-")):
            continue
        out.append(f"| {name} | {s['client']} | {s.get('client_version', '')} | {s['what']} | {verdict(s)} |")
    out += ["", "## HTTP edge cases (hand-written)", "", "| scenario | what | verdict |", "|---|---|---|"]
    for name, s in found.items():
        if name.startswith("edge-"):
            out.append(f"| {name} | {s['what']} | {verdict(s)} |")
    total = sum(requests(s) for s in found.values())
    out += ["", f"Corpus: {len(found)} scenarios, {total} requests."]
    print("\n".join(out))


if __name__ == "__main__":
    main()
