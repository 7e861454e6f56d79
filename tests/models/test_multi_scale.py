"""Multi-scale training (CARN's multi-scale model) in a real Runner."""
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner

from ghostsr_mm.apis import write_data_config
from helpers import make_sr_data

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _draws_on_rank(rank: int, world: int, init_file: str, out: str):
    """One rank of test_one_scale_per_iteration_same_on_every_rank."""
    import json
    import numpy as np
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    # Each rank's own random state differs, as in a real run.
    torch.manual_seed(100 + rank)
    np.random.seed(100 + rank)
    import ghostsr_mm  # noqa: F401
    from mmagic.registry import MODELS
    model = MODELS.build(
        dict(
            type='MultiScaleEditModel',
            generator=dict(type='CARNNet', multi_scale=True, mid_channels=8),
            pixel_loss=dict(type='L1Loss')))
    draws = [int(model.scale_for_iter(i)) for i in range(60)]
    gathered = [None] * world
    dist.all_gather_object(gathered, draws)
    if rank == 0:
        with open(out, 'w') as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


@pytest.mark.slow
def test_one_scale_per_iteration_same_on_every_rank(tmp_path):
    """Two ranks (gloo, two processes with different random states) draw
    the same scale at every iteration, and all three scales occur."""
    import json
    import torch.multiprocessing as mp
    out = tmp_path / 'draws.json'
    mp.spawn(_draws_on_rank, args=(2, str(tmp_path / 'init'), str(out)),
             nprocs=2, join=True)
    rank0, rank1 = json.loads(out.read_text())
    assert rank0 == rank1
    assert set(rank0) == {2, 3, 4}


@pytest.mark.slow
def test_carn_multi_scale_config_trains_all_upsamplers(tmp_path):
    data = make_sr_data(str(tmp_path / 'data'), num=2, size=48)
    cfg_path = write_data_config(
        str(tmp_path / 'carn.py'),
        osp.join(ROOT, 'configs/ghostsr/carn/ghost_carn_x2_div2k.py'),
        data, iters=8, gt_patch=24,
        overrides=dict(
            model=dict(generator=dict(mid_channels=8)), custom_hooks=[]))
    from mmengine.config import Config
    cfg = Config.fromfile(cfg_path)
    cfg.work_dir = str(tmp_path / 'work')
    runner = Runner.from_cfg(cfg)
    generator = runner.model.generator
    calls = []
    generator.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(
            (args[0].shape[-1], kwargs.get('scale'))),
        with_kwargs=True)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    runner.train()
    train_calls = calls[:8]
    expected = [runner.model.scale_for_iter(i) for i in range(8)]
    assert [s for _, s in train_calls] == expected
    # LR patches are the 24x24 GT patch downscaled by the drawn scale.
    assert all(w == 24 // s for w, s in train_calls)
    # Every drawn scale's upsampler was trained.
    for s in set(expected):
        key = next(k for k in before if k.startswith(f'upsamplers.x{s}.'))
        assert not torch.equal(before[key], generator.state_dict()[key]), s
