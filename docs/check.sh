#!/usr/bin/env bash
# Build the documentation as CI does: mkdocs build --strict (broken links, missing references and
# docstrings that do not match their signatures are errors) into a temporary folder, executing
# every tutorial in docs/tutorials (a tutorial that raises fails the build). Then check that every
# public name of the API is in the built reference, and list public objects without docstring and
# parameters without type annotation (a report, not an error).
#
#   bash docs/check.sh                 # needs: pip install -e ".[dev,docs]"
#
# The tutorials read MNIST from $SPIKEGRAD_DATA/mnist (default ~/.cache/spikegrad/mnist, downloaded
# when missing). Exit status: non-zero on any error.
set -euo pipefail
cd "$(dirname "$0")/.."

export NO_MKDOCS_2_WARNING=1       # Material's notice about MkDocs 2 is not a build problem
export MPLBACKEND=agg
# The tutorials are small: one thread each avoids OpenMP threads waiting on each other when the
# machine is shared with other jobs (CI); set OMP_NUM_THREADS to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT

# Every build executes every tutorial: drop the gallery's cache of earlier runs.
rm -rf docs/gallery

# Compile the C kernels once (cached under $SPIKEGRAD_CACHE or ~/.cache/spikegrad), so that the
# tutorial timings below are the tutorials' own.
python - <<'PY'
import torch
import spikegrad as sg
sg.LIF()(torch.zeros(2, 1, 4, requires_grad=True))[0].sum().backward()
sg.LI()(torch.zeros(2, 1, 4))
PY

start=$(date +%s)
mkdocs build --strict --site-dir "$site"
echo "docs/check.sh: mkdocs build took $(( $(date +%s) - start )) s"

# Every tutorial ran (the gallery writes one page per executed script).
for script in docs/tutorials/[0-9][0-9]_*.py; do
    name="$(basename "$script" .py)"
    if [ ! -f "$site/gallery/$name/index.html" ]; then
        echo "docs/check.sh: tutorial $name was not rendered" >&2
        exit 1
    fi
done
python docs/api_check.py "$site"
