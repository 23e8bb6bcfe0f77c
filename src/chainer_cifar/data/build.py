"""Build every preprocessed pickle of the original tool from the official batches.

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

INFO_NAME = 'dataset_info.json'
STATS_NAME = 'preprocess_stats.npz'
VARIANTS = ('image', 'image_norm', 'image_zca', 'image_norm_zca')


def _save_png(array, path):
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format='PNG'))


def build(batches_dir='dataset/cifar-10-batches-py', out_dir='dataset',
          zca_eps=preprocess.DEFAULT_ZCA_EPS, protocol=DEFAULT_PROTOCOL, log=print):
    """Write label.pkl, the four image pickles, mean.txt, sample PNGs, stats and info.

    Returns the info dict (also written to ``dataset_info.json``), which
    includes the seconds each step took.
    """
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
    save_pickle({'train': train_y, 'test': test_y}, os.path.join(out_dir, 'label.pkl'), protocol)

    mean = preprocess.channel_mean(train_raw)
    std = preprocess.channel_std(train_raw, mean)
    with open(os.path.join(out_dir, 'mean.txt'), 'w') as f:
        f.write(numpy.array_str(mean) + '\n')
    stats = {'mean': mean, 'std': std, 'zca_eps': zca_eps}

    def write_variant(name, train, test):
        save_pickle({'train': train, 'test': test}, os.path.join(out_dir, name + '.pkl'), protocol)
        _save_png(preprocess.sample_grid(train),
                  os.path.join(out_dir, name.replace('image', 'sample') + '.png'))

    write_variant('image', preprocess.normalize(train_raw, mean), preprocess.normalize(test_raw, mean))
    step('image.pkl')
    train = preprocess.normalize(train_raw, mean, std)
    test = preprocess.normalize(test_raw, mean, std)
    write_variant('image_norm', train, test)
    step('image_norm.pkl')
    # The normalized copy is whitened in place: ZCA reads each chunk before writing it.
    zca = preprocess.ZCA.fit(train, zca_eps)
    write_variant('image_norm_zca', zca.apply(train, out=train), zca.apply(test, out=test))
    stats.update(norm_zca_mean=zca.mean, norm_zca_matrix=zca.matrix)
    step('image_norm_zca.pkl')
    del train, test
    zca = preprocess.ZCA.fit(train_raw, zca_eps)
    write_variant('image_zca', zca.apply(train_raw), zca.apply(test_raw))
    stats.update(zca_mean=zca.mean, zca_matrix=zca.matrix)
    step('image_zca.pkl')
    atomic_write(os.path.join(out_dir, STATS_NAME), lambda f: numpy.savez(f, **stats))

    info = {'n_train': int(len(train_y)), 'n_test': int(len(test_y)),
            'partial': bool(len(train_y) < archive.FULL_SIZES['train']
                            or len(test_y) < archive.FULL_SIZES['test']),
            'zca_eps': zca_eps, 'pickle_protocol': protocol,
            'channel_mean': mean.tolist(), 'channel_std': std.tolist(),
            'seconds': timings, 'created': time.strftime('%Y-%m-%dT%H:%M:%S')}
    archive_info = os.path.join(os.path.dirname(os.path.abspath(batches_dir)), archive.INFO_NAME)
    if os.path.exists(archive_info):
        with open(archive_info) as f:
            info['archive'] = json.load(f)
    atomic_write(os.path.join(out_dir, INFO_NAME),
                 lambda f: f.write(json.dumps(info, indent=1, sort_keys=True) + '\n'), mode='w')
    return info
