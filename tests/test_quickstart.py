"""quickstart.sh: builds what it trains on, frames its result, shows the model on test images; outputs ignored."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import MINI_ARCHIVE_MD5, ROOT


def read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_quickstart_builds_only_the_dataset_file_it_trains_on():
    script = read('quickstart.sh')
    built = re.findall(r'src/dataset\.py --only (\S+)', script)
    trained = re.findall(r'-d dataset/(\w+)\.pkl', script)
    assert built and built == trained, (built, trained)


def test_outputs_the_readme_commands_write_into_the_checkout_are_ignored_by_git():
    if shutil.which('git') is None or not os.path.isdir(os.path.join(ROOT, '.git')):
        pytest.skip('not a git checkout')
    outputs = set()
    for line in read('README.md').splitlines():
        if re.match(r'\s*(\.venv/bin/)?python ', line):
            outputs.update(re.findall(r'--(?:out|plot|json) (\S+)', line.split('#')[0]))
    assert {'analysis/', 'report.md', 'curves.png'} <= outputs  # the parse still finds them
    paths = [o + 'x.png' if o.endswith('/') else o for o in outputs]
    ignored = subprocess.run(['git', 'check-ignore'] + paths, cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(paths), 'not ignored: {}'.format(sorted(set(paths) - set(ignored)))


def test_quickstart_ends_with_what_its_result_means_and_the_model_on_test_images(mini_archive, tmp_path):
    # The whole script on the real partial archive, with the install step stubbed out
    # (the running environment stands in for .venv) and a run cut to 1 epoch on 256 images.
    checkout = tmp_path / 'checkout'
    (checkout / 'scripts').mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, 'quickstart.sh'), str(checkout))
    os.symlink(os.path.join(ROOT, 'src'), str(checkout / 'src'))
    os.symlink(sys.prefix, str(checkout / '.venv'))
    (checkout / 'scripts' / 'install.sh').write_text('echo "== install stubbed out"\n')
    env = dict(os.environ, CIFAR10_ARCHIVE=mini_archive, CIFAR10_MD5=MINI_ARCHIVE_MD5, EPOCHS='1', SUBSET='256')
    env.pop('GPU', None)
    done = subprocess.run(['bash', str(checkout / 'quickstart.sh')], env=env, capture_output=True, text=True,
                          timeout=900)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(n for n in os.listdir(str(checkout / 'dataset')) if n.endswith('.pkl')) == \
        ['image_norm.pkl', 'label.pkl']
    for step in ('install', 'download', 'dataset', 'train'):
        assert re.search(r'== {} took \d+ s'.format(step), out), step
    framing = out[out.index('== what this result means'):]
    assert re.search(r'quickstart: model cnn, 1 epoch on 256 training images .* of the 8,336 in a PARTIAL', framing)
    assert re.search(r'test error \d+\.\d% on 256 test images .*; chance is 90%', framing)
    assert 'article-cnn: 300 epochs' in framing
    shown = re.findall(r'^test image (\d+) \(true: \w+\): .*  (right|WRONG)$', out, re.M)
    assert [int(i) for i, _ in shown] == list(range(10))
    assert '{} of 10 right'.format(sum(r == 'right' for _, r in shown)) in out
    assert re.search(r'^note: this model \(1 epoch on 256 images\) has \d+\.\d% test error', out, re.M)
