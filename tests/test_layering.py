"""The package's layers, as OpenMMLab lays them out by kind: ops below
models, models below engine and apis (which may use everything below)."""
import ast
import glob
import os.path as osp

import pytest

PACKAGE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'ghostsr_mm')
ABOVE = {
    'ops': ('models', 'engine', 'apis', 'datasets', 'evaluation',
            'analysis'),
    'models': ('engine', 'apis', 'datasets', 'evaluation'),
}


def imported_modules(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


@pytest.mark.parametrize('layer', sorted(ABOVE))
def test_a_layer_never_imports_the_layers_above(layer):
    files = glob.glob(osp.join(PACKAGE, layer, '**', '*.py'), recursive=True)
    assert files
    bad = [(osp.relpath(f, PACKAGE), m) for f in files
           for m in imported_modules(f)
           if m.startswith(tuple(f'ghostsr_mm.{up}' for up in ABOVE[layer]))]
    assert not bad
