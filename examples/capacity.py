"""Capacity, as the lecture draws it: polynomials of degree 1, 3 and 12 fitted to a few noisy points.

The points are 15 noisy samples of a smooth curve, sin(2 pi x), evenly
spread over [0, 1].
Degree 1 cannot follow the curve (underfitting: it misses the training
points too). Degree 12 has nearly as many coefficients as there are points:
it fits them best and the curve between them worst (overfitting). Degree 3
is in between, and predicts new points best. Printed: each degree's mean
squared error on the training points and on 1,000 new points of the same
curve and noise. Drawn: the points, the curve and the three fits.

    python examples/capacity.py                 # writes capacity.png
    python examples/capacity.py --out fits.png --points 30

numpy and matplotlib only: no TensorFlow, no gradscope.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

DEGREES = (1, 3, 12)
NOISE = 0.25  # standard deviation of the noise on y


def truth(x: np.ndarray) -> np.ndarray:
    """The smooth function the points come from."""
    return np.sin(2 * np.pi * x)


def sample(n: int, rng: np.random.Generator, spread: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points with y the curve plus Gaussian noise; x evenly spread over [0, 1], or uniformly random."""
    x = np.linspace(0.0, 1.0, n) if spread else np.sort(rng.uniform(0.0, 1.0, n))
    return x, truth(x) + rng.normal(0.0, NOISE, n)


@dataclass
class Fit:
    """One least-squares polynomial and its errors."""

    degree: int
    poly: np.polynomial.Polynomial
    train_error: float
    test_error: float


def fit_degrees(points: int = 15, seed: int = 0, degrees: tuple[int, ...] = DEGREES) -> tuple[list[Fit], tuple]:
    """Fits each degree to the same training points; returns the fits and the training points.

    Example:

    >>> fits, _ = fit_degrees()
    >>> [f.degree for f in fits]
    [1, 3, 12]
    """
    rng = np.random.default_rng(seed)
    x, y = sample(points, rng, spread=True)
    x_test, y_test = sample(1000, rng)
    fits = []
    for degree in degrees:
        # Polynomial.fit rescales x to [-1, 1] first, which keeps degree 12 well conditioned.
        poly = np.polynomial.Polynomial.fit(x, y, degree)
        fits.append(Fit(degree, poly, float(np.mean((poly(x) - y) ** 2)), float(np.mean((poly(x_test) - y_test) ** 2))))
    return fits, (x, y)


def draw(fits: list[Fit], points: tuple, path: str) -> None:
    """The lecture's picture: the training points, the true curve and one panel per degree."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, y = points
    grid = np.linspace(0.0, 1.0, 400)
    fig = Figure(figsize=(4.0 * len(fits), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(ncols=len(fits), sharey=True)
    for ax, fit in zip(np.atleast_1d(axes), fits, strict=True):
        ax.plot(grid, truth(grid), color="0.6", linestyle="--", label="the smooth function")
        ax.plot(grid, fit.poly(grid), color="tab:red", label=f"degree {fit.degree}")
        ax.scatter(x, y, color="tab:blue", zorder=3, label="training points")
        ax.set_ylim(-2.0, 2.0)
        ax.set_xlabel("x")
        ax.set_title(f"degree {fit.degree}: train {fit.train_error:.3f}, test {fit.test_error:.3f}")
        ax.legend(fontsize="small", loc="lower left")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=15, help="training points (default: 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the points and the noise (default: 0)")
    parser.add_argument("--out", default="capacity.png", help="where to draw the picture (default: capacity.png)")
    args = parser.parse_args(argv)
    fits, points = fit_degrees(args.points, args.seed)
    print(f"{'degree':>6}  {'train MSE':>9}  {'test MSE':>9}")
    for fit in fits:
        print(f"{fit.degree:>6}  {fit.train_error:>9.4f}  {fit.test_error:>9.4f}")
    print(f"(noise variance {NOISE**2:.4f}: no model's test error can go below it)")
    draw(fits, points, args.out)
    print(f"picture: {args.out}")


if __name__ == "__main__":
    main()
