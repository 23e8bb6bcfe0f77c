#!/usr/bin/env bash
# README's first command: set everything up and run the main job end to end.
#
#   bash quickstart.sh
#
# 1. creates .venv with the pinned stack (scripts/install.sh),
# 2. gets CIFAR-10 (downloads it, or uses $CIFAR10_ARCHIVE / $CIFAR10_MD5 offline),
# 3. preprocesses it into the one file the run trains on (dataset/image_norm.pkl;
#    `python src/dataset.py` builds all five, the ZCA ones take most of its time),
# 4. trains the article's CNN for a short run and writes its log, curves and model
#    to results/quickstart/ (GPU=0 bash quickstart.sh trains on GPU 0),
# 5. says what its test error means and shows the model on ten test images.
set -euo pipefail
cd "$(dirname "$0")"
start=$SECONDS
took() { echo "== $1 took $((SECONDS - start)) s"; start=$SECONDS; }
bash scripts/install.sh
took install
py=.venv/bin/python
$py src/download.py
took download
$py src/dataset.py --only image_norm
took dataset
# image_norm.pkl (the article's contrast normalization): on image.pkl (pixels about
# +-128) the CNN's first epochs sit near chance, which makes a poor two-epoch demo.
$py src/train.py -g "${GPU:--1}" -m cnn -b 128 -p quickstart --out results/quickstart \
    -d dataset/image_norm.pkl --optimizer adam --iter "${EPOCHS:-2}" --subset "${SUBSET:-4000}"
took train
echo
echo "== what this result means"
$py src/analyze.py frame results/quickstart/quickstart_log.csv
echo
echo "== the model on the first ten test images: python src/analyze.py predict results/quickstart/quickstart.model --index 0-9"
$py src/analyze.py predict results/quickstart/quickstart.model --index 0-9
echo
echo "== done: results/quickstart/quickstart_log.csv, quickstart_error.png, quickstart.model"
