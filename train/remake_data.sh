#!/usr/bin/env bash
# Remake all of data/ on a new machine: every source, the filter, the data card and the generator data.
#
#   apt-get update && apt-get install -y sweethome3d-furniture assimp-utils libegl1 libegl-mesa0 libgl1-mesa-dri
#   python3.11 -m venv .venv && .venv/bin/pip install -r requirements-train.txt -e .
#   PY=.venv/bin/python bash train/remake_data.sh            # resumable: run it again after an interruption
#   UNTIL=card PY=.venv/bin/python bash train/remake_data.sh # stop after that step (here: before the generator data)
#   SKIP="augmented card" PY=.venv/bin/python bash train/remake_data.sh  # leave steps out (here: what only the
#                                                            # tokenizer needs; the generator data does not use them)
#
# Each step is skipped once it has finished (a marker in data/.remake/), and prepare_data.py itself skips
# finished chunks, so a rerun loses at most the chunk in progress. Wall seconds per step are appended to
# data/remake-times.tsv. Settings: PY (python), WORKERS (2), DEBS (the folder for Debian's packages, debs),
# UNTIL (the name of the last step to run; empty: all), SKIP (names of steps to leave out this time: they are
# not marked finished, so a later run without SKIP makes them, and the filter and the card again).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
PY=${PY:-python}
WORKERS=${WORKERS:-2}
DEBS=${DEBS:-debs}
UNTIL=${UNTIL:-}
SKIP=${SKIP:-}
READ_ALL="filter card"  # steps that read all of data/train: after a SKIP they stay unmarked, so that the run
                        # that makes the skipped steps runs them again (the filter scores only new shapes)
PACKAGES="sweethome3d ufoai-data morse-simulator-data minetest-mod-homedecor redeclipse-data flightgear-data-base
  flightgear-data-models flightgear-data-ai 0ad-data supertuxkart-data megaglest-data scorched3d-data gl-117-data
  crrcsim-data torcs-data"

if [ ! -d /usr/share/sweethome3d/furniture ] || ! command -v assimp >/dev/null; then
  echo "remake_data: first: apt-get install -y sweethome3d-furniture assimp-utils libegl1 libegl-mesa0 libgl1-mesa-dri" >&2
  exit 1
fi
is_step() { awk -v u="$1" '$1 == "step" && $2 == u {found = 1} END {exit !found}' "$SELF"; }
for name in $UNTIL $SKIP; do
  if ! is_step "$name"; then
    echo "remake_data: UNTIL/SKIP: $name names no step (the names are the words after 'step' in $SELF)" >&2
    exit 2
  fi
done
listed() { [[ " $2 " == *" $1 "* ]]; }  # listed WORD "WORDS": is WORD one of WORDS
mkdir -p data/.remake
step() {  # step NAME COMMAND...: run COMMAND unless NAME finished before; log its wall time
  local name=$1; shift
  if [ -e "data/.remake/$name" ]; then
    echo "== $name: done before, skipped"
  elif listed "$name" "$SKIP"; then
    echo "== $name: left out (SKIP)"
  else
    echo "== $name: $*"
    local start=$SECONDS
    "$@"
    printf '%s\t%d\t%s\n' "$name" $((SECONDS - start)) "$(date -u +%FT%TZ)" >> data/remake-times.tsv
    if [ -z "$SKIP" ] || ! listed "$name" "$READ_ALL"; then touch "data/.remake/$name"; fi
  fi
  if [ "$name" = "$UNTIL" ]; then echo "remake_data: stopped after $name (UNTIL=$UNTIL)"; exit 0; fi
}
debs() {
  mkdir -p "$DEBS/root"
  for p in $PACKAGES; do
    [ -d "$DEBS/root/$p" ] && continue
    (cd "$DEBS" && apt-get download "$p" && dpkg-deb -x "${p}"_*.deb "root/$p.part" && mv "root/$p.part" "root/$p")
  done
}
P="$PY train/prepare_data.py --workers $WORKERS"
E="$PY train/export_meshes.py"

# The base sources of the shipped model: the held-out split, Sweet Home 3D, pybullet, CSG shapes.
step heldout     $P --out data/heldout-sh3d --sweethome3d --split heldout
step heldout-geo $E --data data/heldout-sh3d --out data/heldout-meshes/geometry
step heldout-tex $E --data data/heldout-sh3d --out data/heldout-meshes/textured --textured
step sh3d        $P --out data/train/sh3d --sweethome3d
step val-tex     $E --data data/train/sh3d --out data/val-meshes/textured --textured --validation
step val-geo     $E --data data/train/sh3d --out data/val-meshes/geometry --validation
step val-sh3d    $P --out data/val-sh3d --sweethome3d --split validation
step pybullet    $P --out data/train/pybullet --pybullet
step procedural  $P --out data/train/procedural --procedural 400
# The new sources (issue 28): Debian and PyPI meshes, object families, augmented copies.
step debs        debs
step collect     $PY train/collect_meshes.py --source all --dedupe --debs-root "$DEBS/root" --out data/collected
step collected   $P --out data/train/collected --collected data/collected
step families    $P --out data/train/families --families 400
step augmented   $P --out data/train/augmented --collected data/collected --sweethome3d --augment 1 --augment-only
# The paper's filter (shapes a trained tokenizer reconstructs at IoU < 0.05 leave training), the card. The
# shipped model's data was filtered by the tokenizer shipped before it (commit dcb1f65), taken from git history
# so that a remake leaves out the same shapes; without that history, the shipped tokenizer (a few shapes differ).
FILTER_COMMIT=dcb1f65
filter_tokenizer() {
  local dir=data/filter-tokenizer
  if [ ! -f "$dir/tokenizer.safetensors" ]; then
    rm -rf "$dir.part" && mkdir -p "$dir.part"
    if git cat-file -e "$FILTER_COMMIT:checkpoints/tokenizer.safetensors" 2>/dev/null; then
      for f in tokenizer_config.json tokenizer.safetensors; do
        git show "$FILTER_COMMIT:checkpoints/$f" > "$dir.part/$f"
      done
      mv "$dir.part" "$dir"
    else
      echo "remake_data: no git history of $FILTER_COMMIT: the filter uses checkpoints/ instead" >&2
      rm -rf "$dir.part"; echo checkpoints; return
    fi
  fi
  echo "$dir"
}
run_filter() { $PY train/filter_shapes.py --data data/train --tokenizer "$(filter_tokenizer)" --min-iou 0.05; }
step filter      run_filter
step card        $PY train/data_card.py --data data/train --json data/train/card.json
# Generator data: 4 views of 224 px, the shipped tokenizer's tokens (those the shipped generator was trained on;
# data/gen-tc and data/gen-val-tc on the machine that trained it), EfficientNet-Lite0 stride-32 features.
G="--tokenizer checkpoints --views 4 --size 224 --image-encoder efficientnet --image-strides 32 --workers $WORKERS"
step gen-val     $PY train/prepare_generator_data.py --data data/val-sh3d --out data/gen-val $G
step gen-heldout $PY train/prepare_generator_data.py --data data/heldout-sh3d --out data/gen-heldout $G
step gen-sh3d       $PY train/prepare_generator_data.py --data data/train/sh3d --out data/gen/sh3d $G
step gen-pybullet   $PY train/prepare_generator_data.py --data data/train/pybullet --out data/gen/pybullet $G
step gen-procedural $PY train/prepare_generator_data.py --data data/train/procedural --out data/gen/procedural $G
step gen-families   $PY train/prepare_generator_data.py --data data/train/families --out data/gen/families $G
step gen-collected  $PY train/prepare_generator_data.py --data data/train/collected --out data/gen/collected $G
# The old arms of the data-scaling comparisons: the shipped model's three sources, as hard links.
old_arms() {
  rm -rf data/gen-old data/tok-old && mkdir -p data/gen-old data/tok-old
  for s in sh3d pybullet procedural; do cp -al "data/gen/$s" data/gen-old/; cp -al "data/train/$s" data/tok-old/; done
  cp data/gen/sh3d/manifest.json data/gen/manifest.json
  cp data/gen/sh3d/manifest.json data/gen-old/
}
step old-arms    old_arms
echo "remake_data: done; wall seconds per step in data/remake-times.tsv"
