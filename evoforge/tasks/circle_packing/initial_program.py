"""Pack 26 disjoint circles inside the unit square so that the sum of their radii is as large as possible."""

import numpy as np

N_CIRCLES = 26

# EVOLVE-BLOCK-START
RING_RADIUS = 0.3065


def construct_packing():
    """Return (centers (26, 2), radii (26,)): every circle inside [0, 1]^2, no two overlapping.

    Seed layout: all circles evenly spaced on one ring around the middle of the square, each as large
    as its neighbours and the walls allow. Weak on purpose: the middle and the corners stay empty.
    """
    angles = 2 * np.pi * np.arange(N_CIRCLES) / N_CIRCLES
    centers = 0.5 + RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centers, compute_radii(centers)


def compute_radii(centers):
    """Largest radii that keep every circle inside the square and clear of its nearest neighbour.

    Each circle takes at most half the distance to its nearest centre, so any two radii sum to at most
    their centres' distance. The factor 1 - 1e-12 keeps touching circles apart under rounding.
    """
    wall = np.minimum(centers, 1.0 - centers).min(axis=1)
    distances = np.linalg.norm(centers[:, None, :] - centers[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    radii = np.minimum(wall, distances.min(axis=1) / 2)
    return np.maximum(radii, 0.0) * (1.0 - 1e-12)


# EVOLVE-BLOCK-END


def run_packing():
    """Entry point called by the evaluator: (centers (26, 2), radii (26,), sum of radii)."""
    centers, radii = construct_packing()
    centers = np.asarray(centers, dtype=float)
    radii = np.asarray(radii, dtype=float)
    return centers, radii, float(np.sum(radii))


if __name__ == "__main__":
    _, found_radii, total = run_packing()
    print(f"{len(found_radii)} circles, sum of radii = {total:.6f}")
