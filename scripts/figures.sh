#!/usr/bin/env bash
# Regenerates the figures shown in README.md from the CPU-sized paper configs:
# runs each into runs/paper-cpu/NAME (resuming if interrupted) and copies its PNGs into
# docs/figures/NAME/. Wall times on 2 CPU cores are in docs/figures/README.md.
#
#   scripts/figures.sh [scaling-cpu transfer-cpu negative-control-cpu scaling-onestep-cpu information-exponent-cpu information-exponent-large data-reuse-cpu data-reuse batch-size-cpu rank-cpu giant-steps-cpu giant-steps scaling-onestep-large-cpu]
#
# The two longest are named only on request: batch-size (26 min) and rank (about 2 h); their
# docs/figures folders keep a chosen subset of the PNGs.
set -euo pipefail
cd "$(dirname "$0")/.."
# the whole workspace: selecting one package changes the shared dependencies' features
cargo build --release --workspace
bin=${CARGO_TARGET_DIR:-target}/release/featlearn
names=${*:-scaling-cpu transfer-cpu negative-control-cpu scaling-onestep-cpu information-exponent-cpu information-exponent-large data-reuse-cpu data-reuse batch-size-cpu rank-cpu giant-steps-cpu giant-steps scaling-onestep-large-cpu}
for name in $names; do
  out=runs/paper-cpu/$name
  "$bin" run "configs/paper/$name.toml" --out "$out"
  mkdir -p "docs/figures/$name"
  cp "$out"/*.png "docs/figures/$name/"
  cp "$out/report.md" "docs/figures/$name/report.md"
done
