"""Camera intrinsics implied by a pointmap.

Pixel convention (OpenCV): a pixel at row i, column j has image coordinates (u, v) = (j, i), integers at pixel
centres; camera axes x right, y down, z forward. A pinhole camera with one focal length f (square pixels) and
principal point (cx, cy) sees the point (x, y, z) at u = f * x / z + cx and v = f * y / z + cy.

`estimate_focal` solves those 2N equations for (f, cx, cy) by linear least squares over the valid points (z > 0,
finite, inside the mask): with a = x / z and b = y / z, the unknowns enter linearly,
    [a 1 0] [f cx cy]^T = u,   [b 0 1] [f cx cy]^T = v,
so the normal equations give the solution in closed form. With `principal_point` fixed, f alone is
sum(a (u - cx) + b (v - cy)) / sum(a^2 + b^2). The residual RMS (pixels) says how pinhole-like the map is.

The network also predicts the focal length directly: its scale output is f_c / f with the canonical focal length
f_c = 768 network-input pixels, so f = 768 / scale in network pixels, and f / s in photo pixels where s is the
resize factor of the keep-aspect preprocessing (`focal_from_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANONICAL_FOCAL = 768.0  # the pointmap models' canonical focal length, in network-input pixels


@dataclass(frozen=True)
class CameraEstimate:
    focal: float  # pixels, fx = fy
    cx: float
    cy: float
    rms: float  # root-mean-square reprojection residual, pixels
    num_points: int

    def matrix(self) -> np.ndarray:
        """The 3 x 3 intrinsics matrix K."""
        return np.array([[self.focal, 0.0, self.cx], [0.0, self.focal, self.cy], [0.0, 0.0, 1.0]])


def estimate_focal(
    points: np.ndarray,
    mask: np.ndarray | None = None,
    principal_point: tuple[float, float] | None = None,
    min_depth: float = 1e-6,
) -> CameraEstimate:
    """Least-squares pinhole intrinsics from an H x W x 3 pointmap (see the module docstring)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 pointmap, got shape {pts.shape}")
    h, w = pts.shape[:2]
    valid = np.isfinite(pts).all(axis=2) & (pts[..., 2] > min_depth)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (h, w):
            raise ValueError(f"mask shape {m.shape} differs from the pointmap's {(h, w)}")
        valid &= m
    rows, cols = np.nonzero(valid)
    n = rows.size
    if n < 3:
        raise ValueError(f"need at least 3 valid points (finite, z > {min_depth}) to estimate a focal length, got {n}")
    p = pts[rows, cols]
    a, b = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    u, v = cols.astype(np.float64), rows.astype(np.float64)
    if principal_point is not None:
        cx, cy = (float(c) for c in principal_point)
        denom = float(np.sum(a * a + b * b))
        if denom <= 0:
            raise ValueError("all points lie on the optical axis; the focal length is undetermined")
        f = float(np.sum(a * (u - cx) + b * (v - cy))) / denom
    else:
        # Normal equations of the stacked system, written out: unknowns (f, cx, cy).
        saa, sa, sb = float(np.sum(a * a + b * b)), float(np.sum(a)), float(np.sum(b))
        normal = np.array([[saa, sa, sb], [sa, n, 0.0], [sb, 0.0, n]])
        rhs = np.array([float(np.sum(a * u + b * v)), float(np.sum(u)), float(np.sum(v))])
        if np.linalg.cond(normal) > 1e12:
            raise ValueError("the points do not constrain the focal length (their x/z and y/z are constant); "
                             "pass principal_point= or use more points")
        f, cx, cy = np.linalg.solve(normal, rhs)
    residual = np.concatenate([f * a + cx - u, f * b + cy - v])
    return CameraEstimate(float(f), float(cx), float(cy), float(np.sqrt(np.mean(residual**2))), int(n))


def focal_from_scale(scale: float, resize_factor: float, canonical_focal: float = CANONICAL_FOCAL) -> float:
    """The photo-pixel focal length the network's scale output implies: canonical / scale / resize factor."""
    if scale == 0 or resize_factor == 0:
        raise ValueError("scale and resize factor must be non-zero")
    return canonical_focal / scale / resize_factor
