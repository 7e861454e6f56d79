"""The test modules themselves: a test, fixture or case list defined twice
in one module silently hides the first (pytest collects only the last)."""
import ast
import collections
import glob
import os.path as osp

import pytest

TESTS = osp.dirname(osp.abspath(__file__))
MODULES = sorted(glob.glob(osp.join(TESTS, '**', '*.py'), recursive=True))


def top_level_names(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.Assign):
            yield from (t.id for t in node.targets if isinstance(t, ast.Name))


@pytest.mark.parametrize('path', MODULES,
                         ids=lambda p: osp.relpath(p, TESTS))
def test_no_name_defined_twice(path):
    with open(path) as f:
        counts = collections.Counter(top_level_names(ast.parse(f.read())))
    assert not [name for name, n in counts.items() if n > 1]


def test_a_duplicate_is_found():
    tree = ast.parse('CASES = [1]\ndef test_a(): pass\nCASES = [2]\n'
                     'def test_a(): pass\n')
    counts = collections.Counter(top_level_names(tree))
    assert sorted(n for n, c in counts.items() if c > 1) == ['CASES',
                                                            'test_a']
