"""Every script a user runs answers ``--help`` with its usage, saying nothing twice, and runs nothing."""
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONT_ENDS = sorted(p for p in glob.glob(os.path.join(ROOT, 'src', '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*.py'))
                    if "if __name__ == '__main__':" in open(p).read())


@pytest.mark.parametrize('script', FRONT_ENDS, ids=lambda p: os.path.relpath(p, ROOT))
def test_help_is_the_usage_with_no_paragraph_twice(script):
    result = subprocess.run([sys.executable, script, '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert result.stdout.startswith('usage: ')
    # A parser whose description is the docstring's first line and whose epilog is the whole docstring
    # prints that line twice; argparse refolds the description, so paragraphs are compared word by word.
    paragraphs = [' '.join(p.split()) for p in re.split(r'\n\s*\n', result.stdout) if p.strip()]
    assert len(set(paragraphs)) == len(paragraphs), result.stdout
