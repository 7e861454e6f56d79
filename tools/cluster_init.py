"""Cluster-initialise a ghost model from a pre-trained regular model.

    python tools/cluster_init.py PRETRAINED_CKPT GHOST_CONFIG OUT_CKPT

Builds ``model.generator`` of GHOST_CONFIG, runs the clustering of GhostSR
Eq. 7-9 on the pre-trained weights, prints per-layer cluster sizes and the
mean distance of ghost filters to their intrinsic filter, and writes a
checkpoint that a config's ``load_from`` accepts.
"""
import argparse
import os
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import ghostsr_mm  # noqa: E402,F401
from ghostsr_mm.apis import build_generator  # noqa: E402
from ghostsr_mm.models.clustering import (cluster_init,  # noqa: E402
                                          load_pretrained_state)


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
    if osp.exists(args.out) and not args.force:
        print(f'error: {args.out} exists; pass --force to overwrite it',
              file=sys.stderr)
        return 1
    if not osp.isfile(args.pretrained):
        print(f'error: pre-trained checkpoint {args.pretrained} not found',
              file=sys.stderr)
        return 1
    generator = build_generator(args.config, args.cfg_options)
    state = load_pretrained_state(args.pretrained)
    report = cluster_init(generator, state, seed=args.seed)
    print('\n'.join(report.lines()))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(
        dict(
            state_dict={
                f'generator.{k}': v
                for k, v in generator.state_dict().items()
            },
            meta=dict(
                pretrained=osp.abspath(args.pretrained),
                config=osp.abspath(args.config),
                seed=args.seed)), args.out)
    print(f'ghost checkpoint written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
