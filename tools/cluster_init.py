"""Cluster-initialise a ghost model from a pre-trained regular model.

    python tools/cluster_init.py PRETRAINED_CKPT GHOST_CONFIG OUT_CKPT
        [--seed 0] [--force] [--cfg-options k=v ...]

Builds ``model.generator`` of GHOST_CONFIG, runs the clustering of GhostSR
Eq. 7-9 on the pre-trained weights, prints per-layer cluster sizes and the
mean distance of ghost filters to their intrinsic filter, and writes a
checkpoint that a config's ``load_from`` accepts. A checkpoint that does not
fit the config (another architecture, an already-ghost model) or a config
with no ghost layer is refused before anything is written.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmengine.config import DictAction  # noqa: E402

from ghostsr_mm.apis import build_generator  # noqa: E402
from ghostsr_mm.checkpoint import (load_generator_state,  # noqa: E402
                                   save_generator)
from ghostsr_mm.cli import refuse_to_overwrite, run_tool  # noqa: E402
from ghostsr_mm.models.clustering import cluster_init  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('pretrained', help='regular model checkpoint')
    parser.add_argument('config', help='ghost model config')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument('--seed', type=int, default=0, help='k-means seed')
    parser.add_argument(
        '--force', action='store_true', help='overwrite OUT if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    refuse_to_overwrite((args.out, ), args.force)
    state = load_generator_state(args.pretrained)
    generator = build_generator(args.config, args.cfg_options)
    report = cluster_init(generator, state, seed=args.seed)
    print('\n'.join(report.lines()))
    save_generator(
        generator,
        args.out,
        meta=dict(
            pretrained=osp.abspath(args.pretrained),
            config=osp.abspath(args.config),
            seed=args.seed),
        overwrite=args.force)
    print(f'ghost checkpoint written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))
