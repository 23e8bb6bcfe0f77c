"""Build the preprocessed pickles of the original tool from the official batches.

All four variants by default, as the original did, or only some (``only``):
label.pkl, mean.txt, the statistics and the info are always written, and a
variant not asked for is not computed (the two ZCA fits take most of the
time). Variant files an earlier build left in the folder stay when they were
made from the same data and are removed when not, so every pickle there
matches label.pkl.

One variant at a time is held in memory next to the raw uint8 data, so the
full set needs roughly raw (180 MB) + one float32 copy (740 MB) + the ZCA
matrix, well inside a 24 GB machine.
"""
import json
import os
import time

import numpy
from PIL import Image

from chainer_cifar.data import archive, preprocess
from chainer_cifar.data.pickles import DEFAULT_PROTOCOL, atomic_write, save_pickle
from chainer_cifar.errors import UserError

INFO_NAME = 'dataset_info.json'
STATS_NAME = 'preprocess_stats.npz'
VARIANTS = ('image', 'image_norm', 'image_zca', 'image_norm_zca')
# The entries of preprocess_stats.npz that only a ZCA variant needs.
ZCA_STATS = {'image_zca': ('zca_mean', 'zca_matrix'), 'image_norm_zca': ('norm_zca_mean', 'norm_zca_matrix')}
# An earlier build is of the same data when these entries of its dataset_info.json are equal.
SAME_DATA = ('n_train', 'n_test', 'channel_mean', 'channel_std', 'zca_eps')


def parse_variants(text):
    """``'image_norm,image_zca'`` -> the variants in build order; one error line for an unknown name."""
    names = [n.strip() for n in text.split(',') if n.strip()]
    names = [n[:-len('.pkl')] if n.endswith('.pkl') else n for n in names]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise UserError('{} in {!r}; give a comma-separated list of {}'.format(
            'unknown variant ' + ', '.join(unknown) if unknown else 'no variant', text, ', '.join(VARIANTS)))
    return [v for v in VARIANTS if v in names]


def _files(out_dir, variant):
    return [os.path.join(out_dir, variant + '.pkl'), os.path.join(out_dir, variant.replace('image', 'sample') + '.png')]


def _earlier_build(out_dir, info):
    """``(variants, stats)`` an earlier build in ``out_dir`` made from the same data, else ``([], {})``."""
    try:
        with open(os.path.join(out_dir, INFO_NAME)) as f:
            old = json.load(f)
        with numpy.load(os.path.join(out_dir, STATS_NAME), allow_pickle=False) as npz:
            stats = {k: npz[k] for k in npz.files}
    except Exception:  # none, or unreadable: nothing of it can be trusted
        return [], {}
    if not isinstance(old, dict) or any(old.get(k) != info[k] for k in SAME_DATA):
        return [], {}
    # Builds before --only wrote every variant and no list.
    variants = old.get('variants', VARIANTS)
    return [v for v in VARIANTS if v in variants and os.path.isfile(_files(out_dir, v)[0])
            and all(k in stats for k in ZCA_STATS.get(v, ()))], stats


def _save_png(array, path):
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format='PNG'))


def build(batches_dir='dataset/cifar-10-batches-py', out_dir='dataset',
          zca_eps=preprocess.DEFAULT_ZCA_EPS, protocol=DEFAULT_PROTOCOL, log=print, only=None):
    """Write label.pkl, the image pickles of ``only`` (default: all four), mean.txt, sample PNGs, stats and info.

    Returns the info dict (also written to ``dataset_info.json``), which
    includes the seconds each step took and the ``variants`` the folder holds.
    """
    want = [v for v in VARIANTS if v in (only or VARIANTS)]
    timings = {}
    clock = [time.time()]

    def step(name):
        now = time.time()
        timings[name] = round(now - clock[0], 3)
        log('  {:<22s} {:7.2f} s'.format(name, now - clock[0]))
        clock[0] = now

    log('reading {}'.format(batches_dir))
    train_raw, train_y, test_raw, test_y = archive.read_batches(batches_dir)
    step('read batches')
    mean = preprocess.channel_mean(train_raw)
    std = preprocess.channel_std(train_raw, mean)
    if not (std > 0).all():  # dividing by 0 would write image_norm.pkl full of NaN
        raise UserError('{}: every training image has the same value in channel {}; these are not '
                        'CIFAR-10 images (run `python src/download.py` again)'.format(
                            batches_dir, int(numpy.argmin(std))))
    info = {'n_train': int(len(train_y)), 'n_test': int(len(test_y)),
            'partial': bool(len(train_y) < archive.FULL_SIZES['train']
                            or len(test_y) < archive.FULL_SIZES['test']),
            'zca_eps': zca_eps, 'pickle_protocol': protocol,
            'channel_mean': mean.tolist(), 'channel_std': std.tolist()}
    kept, old_stats = _earlier_build(out_dir, info)
    kept = [v for v in kept if v not in want]
    for variant in VARIANTS:  # a pickle of other data than label.pkl's would be read with the wrong labels
        if variant not in want and variant not in kept:
            for path in _files(out_dir, variant):
                if os.path.exists(path):
                    os.remove(path)
                    log('  removed {} (an earlier build\'s, not known to match these batches)'.format(path))
    save_pickle({'train': train_y, 'test': test_y}, os.path.join(out_dir, 'label.pkl'), protocol)
    atomic_write(os.path.join(out_dir, 'mean.txt'), lambda f: f.write(numpy.array_str(mean) + '\n'), mode='w')
    stats = {'mean': mean, 'std': std, 'zca_eps': zca_eps}
    for variant in kept:
        stats.update((k, old_stats[k]) for k in ZCA_STATS.get(variant, ()))

    def write_variant(name, train, test):
        pkl, png = _files(out_dir, name)
        save_pickle({'train': train, 'test': test}, pkl, protocol)
        _save_png(preprocess.sample_grid(train), png)
        step(name + '.pkl')

    if 'image' in want:
        write_variant('image', preprocess.normalize(train_raw, mean), preprocess.normalize(test_raw, mean))
    if 'image_norm' in want or 'image_norm_zca' in want:
        train = preprocess.normalize(train_raw, mean, std)
        test = preprocess.normalize(test_raw, mean, std)
        if 'image_norm' in want:
            write_variant('image_norm', train, test)
        if 'image_norm_zca' in want:
            # The normalized copy is whitened in place: ZCA reads each chunk before writing it.
            zca = preprocess.ZCA.fit(train, zca_eps)
            stats.update(norm_zca_mean=zca.mean, norm_zca_matrix=zca.matrix)
            write_variant('image_norm_zca', zca.apply(train, out=train), zca.apply(test, out=test))
        del train, test
    if 'image_zca' in want:
        zca = preprocess.ZCA.fit(train_raw, zca_eps)
        stats.update(zca_mean=zca.mean, zca_matrix=zca.matrix)
        write_variant('image_zca', zca.apply(train_raw), zca.apply(test_raw))
    atomic_write(os.path.join(out_dir, STATS_NAME), lambda f: numpy.savez(f, **stats))

    info.update(variants=[v for v in VARIANTS if v in want or v in kept], built=want,
                seconds=timings, created=time.strftime('%Y-%m-%dT%H:%M:%S'))
    archive_info = os.path.join(os.path.dirname(os.path.abspath(batches_dir)), archive.INFO_NAME)
    if os.path.exists(archive_info):
        try:
            with open(archive_info) as f:
                info['archive'] = json.load(f)
        except (OSError, ValueError) as e:  # only a record of where the data came from
            log('warning: {} is unreadable ({}); dataset_info.json will not name the archive'.format(archive_info, e))
    atomic_write(os.path.join(out_dir, INFO_NAME),
                 lambda f: f.write(json.dumps(info, indent=1, sort_keys=True) + '\n'), mode='w')
    return info
