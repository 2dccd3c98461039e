"""The Pareto plot: its front, and labels that do not overprint each other."""

from __future__ import annotations

import random

import pytest

from sparseformer.bench.plots import pareto_front, place_labels, pyplot


@pytest.mark.parametrize("seed", range(10))
def test_pareto_front_is_the_points_nothing_beats(seed):
    rng = random.Random(seed)
    pts = [(rng.uniform(1, 10), rng.uniform(0.8, 1.0)) for _ in range(15)]
    front = set(pareto_front(pts))
    for i, (x, y) in enumerate(pts):
        beaten = any(x2 <= x and y2 > y or x2 < x and y2 >= y for x2, y2 in pts)
        assert (i in front) == (not beaten)


def test_labels_of_crowded_points_do_not_overlap():
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = random.Random(0)
    # a crowded front: ten points within a few percent of each other on both axes
    xy = sorted((300 + 15 * i + rng.uniform(0, 3), 0.95 + 0.002 * i) for i in range(10))
    ax.scatter(*zip(*xy))
    ax.set_xlim(250, 500)
    ax.set_ylim(0.9, 1.0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    naive = [ax.annotate(f"strategy-{i} bs=64", p, xytext=(3, 3), textcoords="offset points") for i, p in enumerate(xy)]
    boxes = [t.get_window_extent(renderer) for t in naive]
    assert any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))  # the same offset for all would overprint
    for t in naive:
        t.remove()
    labels = place_labels(ax, xy, [f"strategy-{i} bs=64" for i in range(10)])
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(boxes) == 10
    for i, a in enumerate(boxes):
        assert a.x0 >= ax.bbox.x0 - 1 and a.x1 <= ax.bbox.x1 + 1  # inside the axes
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
