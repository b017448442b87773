#!/bin/sh
# Mutation testing of the linking rules (docs/testing.md), in a copy of the work tree.
#
# mutmut 3 mutates domain/linking.py and domain/customers.py (setup.cfg [mutmut])
# inside ./mutants of the copy and runs the test selection there on the
# pure-Python twins, so nothing is built and the work tree is never touched.
#
#   MUTATION_DIR  where the copy goes (default: a fresh folder under $TMPDIR or /tmp)
#   JOBS          mutants tested at once (default 2)
#   EXAMPLES      hypothesis examples per property (default 10)
#   MUTANTS       only these mutant names or globs, e.g. 'idlink.domain.linking.*'
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${MUTATION_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/idlink-mutation.XXXXXX")}
JOBS=${JOBS:-2}

"$PY" -c "import mutmut" 2>/dev/null || "$PY" -m pip install -q 'mutmut>=3.3,<4'
# protobuf modules are generated at build time: the copy needs them.
[ -f "$ROOT/src/idlink/v1/common_pb2.py" ] || (cd "$ROOT" && "$PY" -c "from setup import generate_protos; generate_protos()")

mkdir -p "$WORK"
rm -rf "$WORK/mutants"
tar -C "$ROOT" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./mutants --exclude=./var --exclude=./build \
    --exclude=.hypothesis --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=__pycache__ --exclude='*.so' --exclude=node_modules \
    . | tar -C "$WORK" -xf -
echo "mutation testing in $WORK"

cd "$WORK"
export IDLINK_PURE_PYTHON=1
export IDLINK_REFERENCE_EXAMPLES="${EXAMPLES:-10}"
# Fixed hypothesis examples and no example database: the same mutants die every run.
export IDLINK_MUTATION=1
# shellcheck disable=SC2086
"$PY" -m mutmut run --max-children "$JOBS" ${MUTANTS:-}
"$PY" -m mutmut results --all true > mutation-results.txt || true
"$PY" - <<'EOF'
import collections, re
counts = collections.Counter()
for line in open("mutation-results.txt"):
    match = re.match(r"\s*(\S+): (\w[\w ]*)$", line)
    if match:
        counts[match.group(2)] += 1
total = sum(counts.values())
killed = counts.get("killed", 0)
print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
print(f"score: {killed} killed of {total} mutants ({100 * killed / max(total, 1):.1f}%)")
EOF
echo "survivors: cd $WORK && $PY -m mutmut results; $PY -m mutmut show NAME"
