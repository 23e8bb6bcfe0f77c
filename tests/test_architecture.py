"""The import rules of docs/architecture.md hold: every import of every module, read with ``ast``.

The layers and what each may import come from the doc's rules table itself
(``| layer | modules | may import |``), so the doc and this test cannot
disagree: a new import that breaks a rule fails here naming the module, the
import and the rule; a new folder fails until the doc gives it a layer. The
rules the table cannot hold (compat first, nothing of torch or the tools in
the package, a model that knows nothing of the optimizer, the data or the
command line) are below, each with the doc's sentence.
"""
import ast
import glob
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'architecture.md')
PACKAGE = 'chainer_cifar'
FRONT_ENDS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, 'src', '*.py')))
TOOLS = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, 'tools', '*.py')))
NONE = ('—', '-', 'nothing', '')


# ---------------------------------------------------------------- reading the doc and the code

def rules_table(path=DOC):
    """``{layer: (path patterns, layers it may import)}`` from the doc's table."""
    rules, in_table = {}, False
    with open(path, encoding='utf-8') as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if not line.startswith('|'):
                in_table = False
                continue
            if [c.lower() for c in cells[:3]] == ['layer', 'modules', 'may import']:
                in_table = True
                continue
            if not in_table or set(cells[0]) <= set('-: '):
                continue
            name = cells[0].strip('`')
            patterns = [p.strip().strip('`') for p in cells[1].split(',')]
            allowed = [a.strip().strip('`') for a in cells[2].split(',')]
            rules[name] = (patterns, [a for a in allowed if a not in NONE])
    return rules


RULES = rules_table()


def source_files():
    """Every module the rules cover, as paths relative to the checkout: the package, the front ends, the tools."""
    files = glob.glob(os.path.join(ROOT, 'src', PACKAGE, '**', '*.py'), recursive=True)
    files += glob.glob(os.path.join(ROOT, 'src', '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*.py'))
    return sorted(os.path.relpath(f, ROOT).replace(os.sep, '/') for f in files)


def layer_of(path):
    """The layer whose pattern matches ``path`` (``dir/``: everything under it; else a file or a glob)."""
    found = [name for name, (patterns, _) in RULES.items()
             for p in patterns if (path.startswith(p) if p.endswith('/') else pathlib.PurePosixPath(path).match(p)
                                   and p.count('/') == path.count('/'))]
    return found[0] if len(found) == 1 else found or None


def module_file(dotted):
    """The checkout's file of an imported module name, or None (the standard library, a third-party package)."""
    parts = dotted.split('.')
    if parts[0] == PACKAGE:
        base = os.path.join('src', *parts)
        for candidate in (base + '.py', os.path.join(base, '__init__.py')):
            if os.path.isfile(os.path.join(ROOT, candidate)):
                return candidate.replace(os.sep, '/')
        return None
    if len(parts) == 1 and parts[0] in FRONT_ENDS:
        return 'src/{}.py'.format(parts[0])
    if len(parts) == 1 and parts[0] in TOOLS:
        return 'tools/{}.py'.format(parts[0])
    return None


def package_of(path):
    """The dotted package a relative import in ``path`` starts from."""
    if not path.startswith('src/{}/'.format(PACKAGE)):
        return ''
    return '.'.join(path[len('src/'):-len('.py')].split('/')[:-1])


def imports(path):
    """``[(line, dotted name, top level?)]`` of every import in ``path``, in functions too.

    ``from a.b import c`` is ``a.b.c`` when ``c`` is a module of the checkout, else ``a.b``.
    """
    with open(os.path.join(ROOT, path), encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    top = set(id(n) for n in tree.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                package = package_of(path).split('.')
                package = package[:len(package) - node.level + 1]
                base = '.'.join(package + ([base] if base else []))
            for a in node.names:
                sub = '{}.{}'.format(base, a.name)
                found.append((node.lineno, sub if module_file(sub) else base, id(node) in top))
    return sorted(found)


# ---------------------------------------------------------------- the doc's table

def test_the_doc_has_the_rules_table_with_every_layer():
    assert set(RULES) >= {'compat', 'errors', 'package', 'functions', 'links', 'models', 'data', 'training',
                          'results', 'front ends', 'tools'}, sorted(RULES)
    for name, (_, allowed) in RULES.items():
        unknown = [a for a in allowed if a not in RULES]
        assert not unknown, '{}: may import {}, which the table does not define'.format(name, unknown)


def test_every_module_is_in_exactly_one_layer_of_the_doc():
    for path in source_files():
        layer = layer_of(path)
        assert isinstance(layer, str), '{} is in {} layers of docs/architecture.md: give it exactly one'.format(
            path, 'no' if layer is None else ' and '.join(layer))


# ---------------------------------------------------------------- the rules

def broken_imports(paths):
    """One line per import of ``paths`` that the doc's table does not allow: module, import, rule."""
    broken = []
    for path in paths:
        layer = layer_of(path)
        allowed = RULES[layer][1]
        for line, name, _ in imports(path):
            target_file = module_file(name)
            target = None if target_file is None else layer_of(target_file)
            if target is not None and target != layer and target not in allowed:
                broken.append('{}:{} ({}) imports {} ({}): rule "{} may import {}"'.format(
                    path, line, layer, name, target, layer, ', '.join(allowed) or 'nothing of the project'))
    return broken


def test_every_import_follows_the_layers_of_the_doc():
    broken = broken_imports(source_files())
    assert not broken, 'imports that break docs/architecture.md:\n' + '\n'.join(broken)


def test_the_package_and_the_front_ends_import_no_torch_and_no_tool():
    """"The package imports no PyTorch and nothing of tools/; no library module imports a front end."""
    broken = []
    for path in source_files():
        if path.startswith('tools/'):
            continue
        for line, name, _ in imports(path):
            top = name.split('.')[0]
            if top == 'torch':
                broken.append('{}:{} imports {}: only tools/ may use PyTorch'.format(path, line, name))
            elif top in TOOLS:
                broken.append('{}:{} imports tools/{}.py: tools measure the package; it never needs them'.format(
                    path, line, top))
            elif top in FRONT_ENDS and path.startswith('src/{}/'.format(PACKAGE)):
                broken.append('{}:{} imports the front end src/{}.py: no library module imports a front '
                              'end'.format(path, line, top))
    assert not broken, '\n'.join(broken)


def test_compat_comes_first():
    """"compat first": every front end and tool imports the package (and so compat) before Chainer."""
    broken = []
    for path in source_files():
        if path.startswith('src/{}/'.format(PACKAGE)):
            continue  # importing any chainer_cifar module runs chainer_cifar/__init__.py, which applies compat
        for line, name, _ in [i for i in imports(path) if i[2]]:  # the module's own top-level imports, in order
            root = name.split('.')[0]
            if root == PACKAGE or root in FRONT_ENDS + TOOLS:
                break
            if root in ('chainer', 'chainermn', 'cupy'):
                broken.append('{}:{} imports {} before chainer_cifar: the compatibility layer must come '
                              'first'.format(path, line, name))
                break
    init = imports('src/{}/__init__.py'.format(PACKAGE))
    assert [n for _, n, _ in init if n.startswith(PACKAGE)][:1] == [PACKAGE + '.compat'], init
    assert not broken, '\n'.join(broken)


def import_cycles(paths):
    """Groups of modules that import each other, directly or round a longer loop (Tarjan's algorithm).

    An import of a package's ``__init__`` is left out: it is the package's list
    of names (``models/registry`` imports ``chainer_cifar.models`` to register the built-in models).
    """
    graph = {p: sorted({module_file(n) for _, n, _ in imports(p)} - {None, p}) for p in paths}
    graph = {p: [t for t in targets if not t.endswith('__init__.py')] for p, targets in graph.items()}
    index, low, stack, cycles = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_two_modules_import_each_other():
    """"no import cycles": a lazy import inside a function hides a cycle, it does not break it."""
    cycles = import_cycles(source_files())
    assert not cycles, 'modules that import each other: ' + '; '.join(' <-> '.join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle_inside_a_layer(tmp_path, monkeypatch):
    package = tmp_path / 'src' / PACKAGE / 'training'
    package.mkdir(parents=True)
    (package / 'args.py').write_text('def check():\n    from chainer_cifar.training import distributed\n')
    (package / 'distributed.py').write_text('from chainer_cifar.training.args import check\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', str(tmp_path))
    assert import_cycles(['src/chainer_cifar/training/args.py', 'src/chainer_cifar/training/distributed.py']) == [
        ['src/chainer_cifar/training/args.py', 'src/chainer_cifar/training/distributed.py']]


# Names a model must not reach: the optimizer, the data and the training loop, the command line.
MODEL_MUST_NOT_KNOW = ('argparse', 'chainer.optimizers', 'chainer.optimizer_hooks', 'chainer.training',
                       'chainer.iterators', 'chainer.datasets', 'chainer.dataset', 'sys.argv', 'optparse')


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return '.'.join([node.id] + parts[::-1])
    return None


def test_a_model_never_knows_about_the_optimizer_the_data_or_the_command_line():
    """"a model never knows about the optimizer, the data files or the command line"."""
    broken = []
    for path in source_files():
        if layer_of(path) != 'models':
            continue
        with open(os.path.join(ROOT, path), encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        names = [(line, name) for line, name, _ in imports(path)]
        names += [(n.lineno, _dotted(n)) for n in ast.walk(tree) if isinstance(n, ast.Attribute)]
        for line, name in names:
            if name and any(name == bad or name.startswith(bad + '.') for bad in MODEL_MUST_NOT_KNOW):
                broken.append('{}:{} uses {}'.format(path, line, name))
    assert not broken, 'a model must not know the optimizer, the data or the command line:\n' + '\n'.join(broken)


def test_importing_every_module_of_the_package_loads_no_torch_and_no_tool():
    """The same rule at run time: what the modules import, directly or not."""
    code = ('import pkgutil, sys; import chainer_cifar; '
            '[__import__(m.name) for m in pkgutil.walk_packages(chainer_cifar.__path__, "chainer_cifar.")]; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in {!r}))').format(['torch'] + TOOLS + FRONT_ENDS)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'src'))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == '[]', proc.stdout


# ---------------------------------------------------------------- the checker checks

def test_the_checker_sees_a_broken_rule(tmp_path, monkeypatch):
    """A training module importing a private function module (even inside a function) is named, with the rule."""
    assert layer_of('src/chainer_cifar/training/updater.py') == 'training'
    assert layer_of('src/chainer_cifar/links.py') == 'links' and layer_of('src/train.py') == 'front ends'
    assert layer_of('tools/bench.py') == 'tools' and layer_of('src/chainer_cifar/__init__.py') == 'package'
    package = tmp_path / 'src' / PACKAGE
    (package / 'training').mkdir(parents=True)
    (package / 'functions').mkdir()
    (package / 'functions' / '_parallel.py').write_text('')
    (package / 'training' / 'bad.py').write_text(
        'from chainer_cifar.training import args\n'
        'def f():\n    from chainer_cifar.functions._parallel import split\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', str(tmp_path))
    assert broken_imports(['src/{}/training/bad.py'.format(PACKAGE)]) == [
        'src/chainer_cifar/training/bad.py:3 (training) imports chainer_cifar.functions._parallel (functions): '
        'rule "training may import {}"'.format(', '.join(RULES['training'][1]))]


@pytest.mark.parametrize('layer, must_not', [('models', {'training', 'data', 'results', 'functions'}),
                                              ('training', {'results', 'front ends', 'tools'}),
                                              ('results', {'training', 'front ends', 'tools'}),
                                              ('compat', {'errors', 'package', 'functions'}),
                                              ('links', {'models', 'training'})])
def test_the_doc_states_the_one_way_imports(layer, must_not):
    """front ends -> training -> models -> links -> functions; training -> data; results never trains."""
    assert not must_not & set(RULES[layer][1]), (layer, RULES[layer][1])


def test_the_doc_map_names_every_tool_and_front_end():
    text = open(DOC, encoding='utf-8').read()
    for name in FRONT_ENDS:
        assert re.search(r'`src/{}\.py`'.format(name), text), name
    for name in TOOLS:
        assert re.search(r'`{}(\.py)?`'.format(name), text), name
