#!/usr/bin/env bash
# `make demo`: a release, an update that full fine-tuning would have made harmful, and what ships instead.
#   v1 = cml train on five UD treebanks (configs/demo/train.yaml)
#   v2 = cml update with new Finnish data, the default strategy (laft_uriel), full fine-tuning beside it as a
#        reference (configs/demo/update.yaml); then check, export (PEFT), predict, and a summary of v2's report.
# Runs from the repository root, whatever the working directory; CML_BIN overrides the folder of `cml`/`python`.
# The measured output and timing are in docs/demo.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN="${CML_BIN:-.venv/bin}"
CML="$BIN/cml"
PYTHON="$BIN/python"
MUST_NOT_SHIP=3
started=$SECONDS

step() { printf '\n== %s\n' "$*"; }

step "cml train: v1 on five treebanks (German, Dutch, Finnish, Estonian, Japanese)"
"$CML" train configs/demo/train.yaml --out runs/demo/v1 --overwrite

step "cml update: v2 = v1 + new Finnish data (laft_uriel; full fine-tuning as a reference)"
status=0
"$CML" update configs/demo/update.yaml --from runs/demo/v1 --out runs/demo/v2 --overwrite || status=$?
if [ "$status" -eq "$MUST_NOT_SHIP" ]; then
    echo "note: v2 was written but must not ship (exit $MUST_NOT_SHIP); the demo expected it to ship, so read" \
         "runs/demo/v2/report.md. The demo goes on to show the rest."
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi

step "cml check: may v2 replace v1?"
status=0
"$CML" check runs/demo/v2 || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq "$MUST_NOT_SHIP" ] || exit "$status"

step "cml export: v2 as a base model, PEFT adapters and routes.json (no cml needed to serve it)"
"$CML" export runs/demo/v2 --format peft --out runs/demo/v2-peft --overwrite

step "cml predict: two Finnish sentences (words separated by spaces)"
printf '%s\n' "Kissa nukkuu auringossa ." "Huomenna sataa lunta koko päivän ." \
    | "$CML" predict runs/demo/v2 --lang fin

step "summary"
echo "report: runs/demo/v2/report.html (also report.md; the record: runs/demo/v2/release.json)"
"$PYTHON" - runs/demo/v2/release.json <<'EOF'
import json
import sys

record = json.load(open(sys.argv[1], encoding="utf-8"))
metric = record["primary_metric"]


def change(c):
    return f"{100 * c['delta']:+.2f} [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}]"


def losses(changes):
    lost = [f"{lang} {change(per[metric])}" for lang, per in sorted(changes.items()) if per[metric]["ci_high"] < 0]
    return ", ".join(lost) or "none"


updated = [lang for lang, result in record["results"].items() if result["updated"]]
ours = {lang: result["changes"] for lang, result in record["results"].items() if result["changes"]}
gains = [f"{lang} {change(per[metric])}" for lang, per in sorted(ours.items()) if per[metric]["ci_low"] > 0]
verdict = record["verdict"]
print(f"{record['strategy']['method']} (v2, new data for {', '.join(updated)}): {metric} change, points "
      f"[95% CI]: significant gains {', '.join(gains) or 'none'}; significant losses {losses(ours)}; "
      f"mean {100 * verdict['mean_delta']:+.2f}")
for name, reference in record["references"].items():
    print(f"{name} on the same batch would have lost significantly: {losses(reference['changes'])}; "
          f"mean {100 * reference['verdict']['mean_delta']:+.2f}")
    print(f"verdict: v2 {'may ship' if not verdict['failures'] else 'must not ship'}; {name} "
          f"{'may ship' if not reference['verdict']['failures'] else 'must not ship'} "
          f"({len(reference['verdict']['significant_losses'])} significant losses, at most "
          f"{verdict['max_significant_losses']} allowed)")
EOF
echo "demo done in $((SECONDS - started)) s"
