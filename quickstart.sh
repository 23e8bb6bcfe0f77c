#!/usr/bin/env bash
# README's first command: set everything up and run the main job end to end.
#
#   bash quickstart.sh
#
# 1. creates .venv with the pinned stack (scripts/install.sh),
# 2. gets CIFAR-10 (downloads it, or uses $CIFAR10_ARCHIVE / $CIFAR10_MD5 offline),
# 3. preprocesses it (dataset/*.pkl, sample*.png),
# 4. trains the article's CNN for a short run and writes its log, curves and model
#    to results/quickstart/ (GPU=0 bash quickstart.sh trains on GPU 0).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
py=.venv/bin/python
$py src/download.py
$py src/dataset.py
# image_norm.pkl (the article's contrast normalization): on image.pkl (pixels about
# +-128) the CNN's first epochs sit near chance, which makes a poor two-epoch demo.
$py src/train.py -g "${GPU:--1}" -m cnn -b 128 -p quickstart --out results/quickstart \
    -d dataset/image_norm.pkl --optimizer adam --iter "${EPOCHS:-2}" --subset "${SUBSET:-4000}"
echo "== done: results/quickstart/quickstart_log.csv, quickstart_error.png, quickstart.model"
