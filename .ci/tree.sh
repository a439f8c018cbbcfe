#!/usr/bin/env bash
# Builds build/tree/cellguard/{drivers,protocols,daemon} as symlinks to the code folders.
# mypy and import-linter read packages from disk by their import names; the editable
# install maps the names with an import hook they do not follow, so they get this tree.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$root/build/tree"
rm -rf "$tree"
mkdir -p "$tree/cellguard"
for part in drivers protocols daemon; do
  ln -s "$root/$part" "$tree/cellguard/$part"
done
echo "$tree"
