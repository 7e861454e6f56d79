"""Clustering initialisation of a ghost model from a pre-trained regular one
(GhostSR Sec. 3.2, Eq. 7-9, Algorithm 1 steps 1-3).

For every ghost layer, in network order:

* Eq. 9: keep only the input channels that the previous ghost layer made
  intrinsic, where that layer's output is this layer's whole input (through
  an activation only, as the model declares in ``screened_inputs()``: EDSR's
  and CARN's conv2 after conv1), and this layer is not grouped. A layer fed
  by a residual sum (EDSR's next block), a 1x1 fusion (CARN) or a
  concatenation (RDN's dense layers) sees other features than the previous
  layer's intrinsic and ghost channels, and is clustered on all inputs;
* Eq. 7: k-means (scikit-learn, seeded) of the vectorised filters into
  (1 - λ)·c_o clusters, within each group for grouped convs;
* Eq. 8: per cluster, the filter nearest to the centroid is intrinsic; its
  weights and bias are copied into the intrinsic conv.

Every other filter of a cluster becomes a ghost of that cluster's intrinsic
channel and keeps its original output position, so the residual stream and
every following pre-trained layer see features where they expect them. All
regular layers take their pre-trained weights unchanged.
"""
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn as nn
from sklearn.cluster import KMeans
from torch import Tensor

from ghostsr_mm.models.layers import by_order_mapping, ghost_layers
from ghostsr_mm.utils import InputError

__all__ = [
    'LayerClusters', 'ClusterReport', 'check_pretrained', 'cluster_filters',
    'cluster_init'
]


@dataclass
class LayerClusters:
    """Clustering result of one layer.

    Attributes:
        keep (ndarray): (m,) output position of each intrinsic channel.
        src (ndarray): (C_out,) intrinsic channel of each output channel.
        ghost (ndarray): (G,) the ghost output channels.
        distance (ndarray): (C_out,) distance of each filter to its
            intrinsic filter (0 for intrinsic ones).
    """
    keep: np.ndarray
    src: np.ndarray
    ghost: np.ndarray
    distance: np.ndarray

    @property
    def cluster_sizes(self) -> List[int]:
        return np.bincount(self.src, minlength=len(self.keep)).tolist()


@dataclass
class ClusterReport:
    """What :func:`cluster_init` did, layer by layer."""
    layers: Dict[str, LayerClusters] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)  # names, not loaded
    unused: List[str] = field(default_factory=list)  # pre-trained keys

    def lines(self) -> List[str]:
        out = []
        for name, c in self.layers.items():
            sizes = np.bincount(c.cluster_sizes)
            hist = ', '.join(f'{n}x{s}' for s, n in enumerate(sizes)
                             if n and s)
            ghost_dist = c.distance[c.ghost]
            out.append(f'{name}: {len(c.keep)} clusters (sizes {hist}), '
                       f'mean ghost-to-intrinsic distance '
                       f'{ghost_dist.mean():.4g}')
        for name in self.missing:
            out.append(f'{name}: not in the pre-trained checkpoint, '
                       'left at its initialisation')
        if self.unused:
            more = (f' and {len(self.unused) - 5} more'
                    if len(self.unused) > 5 else '')
            out.append(f'pre-trained tensors the model has no place for '
                       f'({len(self.unused)}): '
                       f'{", ".join(self.unused[:5])}{more}')
        return out


def cluster_filters(weight: Tensor,
                    num_intrinsic: int,
                    groups: int = 1,
                    seed: int = 0) -> LayerClusters:
    """Eq. 7-8 on one layer's (screened) filters.

    Args:
        weight (Tensor): (C_out, C_in', s, s) filters.
        num_intrinsic (int): m = ceil((1 - λ) C_out) clusters in all.
        groups (int): Cluster within each of this many output groups.
        seed (int): k-means seed.

    Returns:
        LayerClusters: Intrinsic channels in increasing output position.
    """
    c_out = weight.shape[0]
    per_out, per_in = c_out // groups, num_intrinsic // groups
    flat = weight.detach().double().reshape(c_out, -1).cpu().numpy()
    keep, owner = [], np.empty(c_out, dtype=np.int64)
    for g in range(groups):
        rows = np.arange(g * per_out, (g + 1) * per_out)
        reps, members = _cluster_group(flat[rows], per_in, seed)
        for rep, idx in zip(reps, members):
            owner[rows[idx]] = rows[rep]
        keep += sorted(rows[reps].tolist())
    keep = np.array(keep)
    index_of = {pos: i for i, pos in enumerate(keep)}
    src = np.array([index_of[owner[c]] for c in range(c_out)])
    ghost = np.array([c for c in range(c_out) if c not in index_of])
    distance = np.linalg.norm(flat - flat[owner], axis=1)
    return LayerClusters(keep, src, ghost, distance)


def _cluster_group(flat: np.ndarray, k: int,
                   seed: int) -> Tuple[List[int], List[np.ndarray]]:
    """k representatives (Eq. 8) and the members of each."""
    n = len(flat)
    if k >= n:
        return list(range(n)), [np.array([i]) for i in range(n)]
    with warnings.catch_warnings():
        # Fewer distinct filters than clusters: handled below.
        warnings.filterwarnings('ignore', message='Number of distinct')
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(flat)
    dist = np.linalg.norm(flat - km.cluster_centers_[km.labels_], axis=1)
    reps = []
    for j in range(k):
        idx = np.flatnonzero(km.labels_ == j)
        if len(idx):
            reps.append(int(idx[np.argmin(dist[idx])]))
    # Empty clusters (identical filters): the filters farthest from their
    # representative become intrinsic on their own.
    while len(reps) < k:
        assign = _assign(flat, reps)
        far = np.linalg.norm(flat - flat[assign], axis=1)
        far[reps] = -1
        reps.append(int(np.argmax(far)))
    assign = _assign(flat, reps)
    # Members: by nearest representative (k-means labels where the cluster
    # kept its representative).
    members = [np.flatnonzero(assign == r) for r in reps]
    return reps, members


def _assign(flat: np.ndarray, reps: List[int]) -> np.ndarray:
    """Nearest representative of every filter (a representative owns
    itself)."""
    d = np.linalg.norm(flat[:, None] - flat[reps][None], axis=2)
    owner = np.asarray(reps)[np.argmin(d, axis=1)]
    owner[reps] = reps
    return owner


def check_pretrained(model: nn.Module, pretrained: Dict[str, Tensor]) -> None:
    """Refuse a pre-trained state dict that :func:`cluster_init` could not
    use: a model without ghost layers, a checkpoint in which no ghost layer
    finds its weight (another architecture, or an already-ghost model), or
    one that holds fewer than half of the model's regular tensors.

    Raises:
        InputError: Saying which and why.
    """
    layers = dict(ghost_layers(model))
    name = type(model).__name__
    if not layers:
        raise InputError(
            f'cluster_init: {name} has no ghost layer (GhostConv2d); '
            'clustering initialises a ghost model: use a ghost config')
    if not any(f'{n}.weight' in pretrained for n in layers):
        hint = (' It holds ghost layers already (`.conv.weight` keys): start '
                'from the regular model it came from.' if any(
                    f'{n}.conv.weight' in pretrained for n in layers) else
                ' Is it a checkpoint of the regular version of this '
                'architecture?')
        raise InputError(
            f'cluster_init: none of the {len(layers)} ghost layers of {name} '
            f'finds its pre-trained weight (e.g. {next(iter(layers))}.weight)'
            f' in the checkpoint.{hint}')
    prefixes = tuple(f'{n}.' for n in layers)
    regular = [k for k in model.state_dict() if not k.startswith(prefixes)]
    found = [k for k in regular if k in pretrained]
    if regular and len(found) < 0.5 * len(regular):
        missing = [k for k in regular if k not in pretrained][:3]
        raise InputError(
            f'cluster_init: the checkpoint holds only {len(found)} of the '
            f'{len(regular)} regular tensors of {name} (missing e.g. '
            f'{missing}); a checkpoint of another architecture?')


def cluster_init(model: nn.Module,
                 pretrained: Dict[str, Tensor],
                 seed: int = 0,
                 method: str = 'kmeans',
                 screen_inputs: bool = True) -> ClusterReport:
    """Initialise a ghost model from a pre-trained regular state dict.

    Args:
        model (nn.Module): The ghost model (modified in place).
        pretrained (dict): State dict of the regular model (same key names
            for regular layers; ``<ghost layer>.weight/bias`` for the
            layers that became ghost).
        seed (int): k-means seed. Default: 0.
        method (str): 'kmeans' (Eq. 7-9) or 'order' (intrinsic = the first
            filters of each group, ghosts by order: the baseline that
            ignores the pre-trained redundancy). Default: 'kmeans'.
        screen_inputs (bool): Apply Eq. 9 (cluster on the input channels
            the feeding ghost layer made intrinsic, for the layers of
            ``model.screened_inputs()``). Default: True.

    Returns:
        ClusterReport: Per-layer clusters and the layers not in
        ``pretrained``.
    """
    if method not in ('kmeans', 'order'):
        raise ValueError(f"cluster_init: `method` must be 'kmeans' or "
                         f"'order', got {method!r}")
    check_pretrained(model, pretrained)
    report = ClusterReport()
    layers = dict(ghost_layers(model))
    own = model.state_dict()
    ghost_keys = {f'{n}.{p}' for n in layers for p in ('weight', 'bias')}
    # Regular layers: copy, checking shapes first.
    regular = {}
    for key, value in pretrained.items():
        if key in ghost_keys:
            continue
        if key not in own:
            report.unused.append(key)
            continue
        if own[key].shape != value.shape:
            raise ValueError(f'cluster_init: {key}: the pre-trained tensor '
                             f'has shape {tuple(value.shape)}, the model '
                             f'expects {tuple(own[key].shape)}')
        regular[key] = value
    for name, layer in layers.items():
        w = pretrained.get(f'{name}.weight')
        expected = (layer.out_channels, ) + tuple(layer.conv.weight.shape[1:])
        if w is None:
            report.missing.append(name)
            continue
        if tuple(w.shape) != expected:
            raise ValueError(f'cluster_init: layer {name!r}: the pre-trained '
                             f'weight has shape {tuple(w.shape)}, the ghost '
                             f'layer expects {expected}')
    # Ghost layers, in network order (Eq. 9 needs the feeding one first).
    feeds = model.screened_inputs() if hasattr(model,
                                               'screened_inputs') else {}
    with torch.no_grad():
        for name, layer in layers.items():
            if name in report.missing:
                continue
            w = pretrained[f'{name}.weight'].to(layer.conv.weight)
            b = pretrained.get(f'{name}.bias')
            groups = layer.conv.groups
            if method == 'order':
                keep, src, ghost = (t.numpy() for t in by_order_mapping(
                    layer.out_channels, layer.num_intrinsic, groups))
                flat = w.reshape(len(w), -1).double().cpu().numpy()
                dist = np.linalg.norm(flat - flat[keep[src]], axis=1)
                clusters = LayerClusters(keep, src, ghost, dist)
            else:
                screened = w
                feeding = report.layers.get(feeds.get(name))
                if screen_inputs and feeding is not None and groups == 1:
                    screened = w[:, torch.as_tensor(feeding.keep)]  # Eq. 9
                clusters = cluster_filters(screened, layer.num_intrinsic,
                                           groups, seed)
            keep = torch.as_tensor(clusters.keep)
            layer.conv.weight.copy_(w[keep])
            if b is not None and layer.conv.bias is not None:
                layer.conv.bias.copy_(b.to(layer.conv.bias)[keep])
            layer.set_mapping(clusters.src, clusters.ghost)
            report.layers[name] = clusters
    # Ghost layers were set above; everything else comes from `regular`.
    missing = model.load_state_dict(regular, strict=False).missing_keys
    ghost_prefixes = tuple(f'{n}.' for n in layers)
    missing = [k for k in missing if not k.startswith(ghost_prefixes)]
    report.missing += missing
    if report.missing:
        warnings.warn('cluster_init: layers and tensors not in the '
                      'pre-trained checkpoint, left at their '
                      f'initialisation: {report.missing}')
    return report
