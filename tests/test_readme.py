"""Every Python block of the README runs as written: the snippets in a
fresh interpreter (the MMagicInferencer one imports MMagic's apis with
nothing of ours imported before the snippet), the config snippet built as
a config, in a folder holding the files they name."""
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def python_blocks():
    with open(osp.join(ROOT, 'README.md')) as f:
        return re.findall(r'```python\n(.*?)```', f.read(), re.S)


def test_the_readme_has_its_snippets():
    blocks = python_blocks()
    assert len(blocks) == 4
    assert sum('_base_ =' in b for b in blocks) == 1


@pytest.mark.slow
def test_readme_python_blocks_run_as_written(tmp_path):
    import mmcv
    from mmagic.registry import MODELS
    from mmengine.config import Config

    from ghostsr_mm.checkpoint import save_generator
    os.symlink(osp.join(ROOT, 'configs'), tmp_path / 'configs')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'ghost_edsr_x2_div2k.py'))
    save_generator(MODELS.build(cfg.model.generator), str(tmp_path /
                                                          'ghost.pth'))
    rng = np.random.default_rng(0)
    mmcv.imwrite(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8),
                 str(tmp_path / 'photo.png'))
    snippets, configs = [], []
    for block in python_blocks():
        (configs if '_base_ =' in block else snippets).append(block)
    for i, block in enumerate(configs):
        path = tmp_path / f'config_{i}.py'
        path.write_text(block)
        built = Config.fromfile(str(path))
        assert MODELS.build(built.model.generator).__class__.__name__ == \
            'GhostEDSRNet'
    # Each snippet in its own namespace, in one fresh interpreter, the
    # MMagicInferencer one first.
    snippets.sort(key=lambda b: 'MMagicInferencer' not in b)
    runner = textwrap.dedent(f"""
        import sys
        blocks = {snippets!r}
        assert 'ghostsr_mm' not in sys.modules
        for block in blocks:
            exec(compile(block, 'README.md', 'exec'), {{}})
        print('ran', len(blocks))
    """)
    done = subprocess.run([sys.executable, '-c', runner], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f'ran {len(snippets)}' in done.stdout
    out = mmcv.imread(str(tmp_path / 'photo_x2.png'))
    assert out.shape == (48, 40, 3)
