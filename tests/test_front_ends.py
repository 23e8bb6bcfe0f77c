"""Every script a user runs: ``--help`` is its usage, a wrong flag one line and exit 2, and its exit status counts."""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import import_torch
from helpers import TORCH_FRONT_ENDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRONT_ENDS = sorted(p for p in glob.glob(os.path.join(ROOT, 'src', '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*.py'))
                    if "if __name__ == '__main__':" in open(p).read())
each_front_end = pytest.mark.parametrize('script', FRONT_ENDS, ids=lambda p: os.path.relpath(p, ROOT))


def run(script, *args):
    if os.path.relpath(script, ROOT) in TORCH_FRONT_ENDS:
        import_torch(os.path.relpath(script, ROOT))
    return subprocess.run([sys.executable, script] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@each_front_end
def test_help_is_the_usage_with_no_paragraph_twice(script):
    result = run(script, '--help')
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert result.stdout.startswith('usage: ')
    # A parser whose description is the docstring's first line and whose epilog is the whole docstring
    # prints that line twice; argparse refolds the description, so paragraphs are compared word by word.
    paragraphs = [' '.join(p.split()) for p in re.split(r'\n\s*\n', result.stdout) if p.strip()]
    assert len(set(paragraphs)) == len(paragraphs), result.stdout


@each_front_end
def test_a_wrong_flag_is_one_error_line_and_exit_2(script):
    result = run(script, '--no-such-flag')
    assert result.returncode == 2 and result.stdout == ''
    (line,) = result.stderr.splitlines()
    assert line.startswith('error: ') and line.endswith('(see --help)')


@each_front_end
def test_the_script_exits_with_the_status_its_main_returns(script):
    """``run_main(main)`` returns the exit status; a bare call would exit 0 after an error line."""
    with open(script) as f:
        tree = ast.parse(f.read())
    (block,) = [node for node in tree.body if isinstance(node, ast.If) and '__main__' in ast.dump(node.test)]
    (statement,) = block.body
    call = statement.value
    assert isinstance(call, ast.Call) and ast.unparse(call.func) == 'sys.exit', ast.unparse(statement)
