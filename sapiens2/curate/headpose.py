"""Head pose of the most prominent person: yaw / pitch / roll from the pose model's face keypoints.

The pose predictor (`sapiens2.tasks.pose.Pose`, its own prepare -> run -> finish steps) gives the 308
Sapiens2 keypoints inside the person stage's best box; eleven stable face landmarks among them are fitted
by PnP (`cv2.solvePnP`) to a generic 3D face (`CANONICAL_FACE`), and the rotation is read as three angles.

Angles, in degrees, in the camera's frame (0, 0, 0: the face looks straight into the camera, upright):

- yaw: turning about the head's vertical axis; positive when the person turns to *their* left (the nose moves
  to the right of the picture), in (-180, 180];
- pitch: nodding; positive when the person looks up (chin raised), in [-90, 90];
- roll: tilting; positive when the head tilts toward the person's left shoulder (clockwise in the picture),
  in (-180, 180].

They compose as R = R_up(yaw) . R_left(-pitch) . R_forward(-roll) in the head's frame (x: the person's left,
y: up, z: out of the face), the usual yaw-then-pitch-then-roll order.

The 308 set's "l_" / "r_" face points are taken to be the person's left / right, as its body points
("left_eye") are in the COCO convention: the two flip into each other and share one naming scheme. Were it
the viewer's left, yaw and roll would change sign (their magnitudes, and so the filters, would not).

Camera: focal length = the image's long side in pixels (a ~53 degree field of view across the long side,
that of a normal lens; web photos carry no usable intrinsics), principal point at the image centre. The
angles barely depend on it for a face that is small in the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np
import pyarrow as pa

from sapiens2.curate.config import HeadConfig
from sapiens2.curate.stages import HEAD_POSE, NO_FACE, Batch, Loader, _columns, built
from sapiens2.keypoints.topdown import whole_image_box

#: A face landmark: (name in the 308-keypoint set, (x, y, z) in millimetres in the head's frame).
Landmark = tuple[str, tuple[float, float, float]]

#: The generic face. x: the person's left, y: up, z: out of the face (right-handed); origin between the inner
#: eye corners. Widths and heights are rounded adult means (men and women averaged) of Farkas, *Anthropometry
#: of the Head and Face* (2nd ed., 1994): inner eye corners 32 mm apart (en-en), outer 90 mm (ex-ex), nose
#: wings 33 mm (al-al), mouth corners 52 mm (ch-ch), nose tip 20 mm ahead of the nose base (sn-prn), nose base
#: to mouth 22 mm (sn-sto) and to chin 68 mm (sn-gn); the eye line sits 45 mm above the nose base (half the
#: outer-eye-corner distance, as in mean 2D face shapes). Depths other than the nose's are a typical profile
#: (outer eye corners 14 mm behind the inner, mouth corners and chin just ahead of them) and the least
#: certain numbers: a 20% depth error changes a 30 degree yaw by about 3 degrees.
#: Eye corners are the ends of the upper lash line (they meet the lower one there).
CANONICAL_FACE: tuple[Landmark, ...] = (
    ("r_outer_end_of_upper_lash_line", (-45.0, 2.0, -14.0)),
    ("r_inner_end_of_upper_lash_line", (-16.0, 0.0, 0.0)),
    ("l_inner_end_of_upper_lash_line", (16.0, 0.0, 0.0)),
    ("l_outer_end_of_upper_lash_line", (45.0, 2.0, -14.0)),
    ("tip_of_nose", (0.0, -38.0, 32.0)),
    ("bottom_center_of_nose", (0.0, -45.0, 14.0)),
    ("r_outer_corner_of_nose", (-16.5, -38.0, 6.0)),
    ("l_outer_corner_of_nose", (16.5, -38.0, 6.0)),
    ("r_outer_corner_of_mouth", (-26.0, -66.0, 2.0)),
    ("l_outer_corner_of_mouth", (26.0, -66.0, 2.0)),
    ("tip_of_chin", (0.0, -113.0, 6.0)),
)

#: Head frame (x left, y up, z out of the face) to OpenCV camera frame (x right, y down, z into the scene)
#: for a face looking into the camera: the person's left is the picture's right.
_FACING_CAMERA = np.diag([1.0, -1.0, -1.0])

OK, NO_LANDMARKS, NO_FIT = "ok", "no_face", "no_fit"


class KeypointPredictor(Protocol):
    """RGB images and one (4,) x1, y1, x2, y2 box each -> one (308, 3) x, y, score array each (pixels of the
    image given). `PoseKeypoints` is the real one; tests use stand-ins."""

    def __call__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]: ...


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def angles_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The camera-from-head rotation (3 x 3; `cv2.solvePnP`'s R) of a head at these angles (degrees)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    return _FACING_CAMERA @ _ry(y) @ _rx(-p) @ _rz(-r)


def rotation_to_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a camera-from-head rotation; inverse of `angles_to_rotation`."""
    m = _FACING_CAMERA @ np.asarray(rotation, np.float64)
    pitch = math.asin(float(np.clip(m[1, 2], -1.0, 1.0)))
    yaw = math.atan2(m[0, 2], m[2, 2])
    roll = -math.atan2(m[1, 0], m[1, 1])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def camera_matrix(height: int, width: int) -> np.ndarray:
    """Focal length = the long side, principal point at the centre (see the module's docstring)."""
    f = float(max(height, width))
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]])


def canonical_points() -> np.ndarray:
    """(11, 3) the generic face's landmarks, millimetres, in `CANONICAL_FACE` order."""
    return np.array([p for _, p in CANONICAL_FACE], np.float64)


@dataclass(frozen=True)
class HeadFit:
    """One image's outcome: angles (None unless `status` is "ok"), how many landmarks scored enough, and the
    mean reprojection error of the fit relative to the face's size (RMS spread of its landmarks)."""

    status: str
    landmarks: int
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    error: float | None = None
    why: str = ""


def solve_head_pose(points: np.ndarray, model: np.ndarray, image_size: tuple[int, int]
                    ) -> tuple[tuple[float, float, float], float] | None:
    """(yaw, pitch, roll) and the relative reprojection error of `model` (N x 3 mm) seen at `points`
    (N x 2 px) in an image of `image_size` (H, W); None when no pose explains them (N < 4, coincident points,
    or the solution is behind the camera). SQPnP (a global solver) then Levenberg-Marquardt refinement."""
    points = np.ascontiguousarray(points, np.float64).reshape(-1, 2)
    model = np.ascontiguousarray(model, np.float64).reshape(-1, 3)
    if len(points) < 4 or len(points) != len(model):
        return None
    spread = float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))
    if not np.isfinite(points).all() or spread < 1.0:
        return None
    k = camera_matrix(*image_size)
    try:
        ok, rvec, tvec = cv2.solvePnP(model, points, k, None, flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            rvec, tvec = cv2.solvePnPRefineLM(model, points, k, None, rvec, tvec)
    except cv2.error:
        return None
    if not ok or float(tvec[2, 0]) <= 0:
        return None
    projected, _ = cv2.projectPoints(model, rvec, tvec, k, None)
    error = float(np.linalg.norm(projected.reshape(-1, 2) - points, axis=1).mean()) / spread
    rotation, _ = cv2.Rodrigues(rvec)
    return rotation_to_angles(rotation), error


def fit_keypoints(keypoints: np.ndarray, image_size: tuple[int, int], min_score: float = 0.3,
                  min_landmarks: int = 6, max_error: float = 0.25,
                  indices: Sequence[int] | None = None) -> HeadFit:
    """The head pose of one person from their (K, 3) x, y, score keypoints: only the `CANONICAL_FACE`
    landmarks scoring >= `min_score` are fitted, and only when there are >= `min_landmarks` of them
    (else status "no_face"); a fit whose relative reprojection error exceeds `max_error` is "no_fit".
    `indices`: the landmarks' rows in `keypoints` (default: their places in the 308-keypoint set)."""
    keypoints = np.asarray(keypoints, np.float64)
    rows = list(face_indices() if indices is None else indices)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3 or keypoints.shape[0] <= max(rows):
        raise ValueError(f"expected (K, 3) keypoints with the {len(rows)} face landmarks' rows "
                         f"(up to {max(rows)}), got shape {keypoints.shape}")
    face = keypoints[rows]
    good = face[:, 2] >= min_score
    count = int(good.sum())
    if count < min_landmarks:
        return HeadFit(NO_LANDMARKS, count, why=f"{count} of {len(rows)} face landmarks score >= {min_score} "
                                                f"(need {min_landmarks})")
    solved = solve_head_pose(face[good, :2], canonical_points()[good], image_size)
    if solved is None:
        return HeadFit(NO_FIT, count, why="no head pose explains the face landmarks")
    (yaw, pitch, roll), error = solved
    if error > max_error:
        return HeadFit(NO_FIT, count, error=error,
                       why=f"the generic face fits the landmarks badly (error {error:.2f} > {max_error})")
    return HeadFit(OK, count, yaw, pitch, roll, error)


def face_indices() -> list[int]:
    """The `CANONICAL_FACE` landmarks' indices in the 308-keypoint set."""
    from sapiens2.keypoints.metadata import keypoints308

    return keypoints308().indices([name for name, _ in CANONICAL_FACE])


class PoseKeypoints:
    """`KeypointPredictor` on a `sapiens2.Pose` (built without a detector): each image's box goes through
    the predictor's own prepare (crop) -> run (network, all crops together) -> finish (UDP decode) steps."""

    def __init__(self, pose: Any) -> None:
        if len(pose.keypoint_set) != 308:
            raise ValueError(f"head pose needs a 308-keypoint Sapiens2 pose model (its face landmarks); this one "
                             f"gives {len(pose.keypoint_set)} keypoints ({pose.keypoint_set.name})")
        self.pose = pose

    def __call__(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        prepared = [self.pose.prepare(image, boxes=np.asarray(box, np.float32).reshape(1, 4))
                    for image, box in zip(images, boxes)]
        return [self.pose.finish(raw, p).keypoints()[0] for raw, p in zip(self.pose.run(prepared), prepared)]


def load_pose_keypoints(model: str, device: str = "cpu", flip_test: bool = True) -> PoseKeypoints:
    """The default predictor: a `sapiens2.Pose` on `model` (a name, size or file), built without a detector.
    The CLI gives the head stage ``Loader.of(load_pose_keypoints, ...)``, so the stage pickles as these three
    settings and loads the network in the process that runs it."""
    from sapiens2.tasks.pose import Pose

    return PoseKeypoints(Pose(model, detector=None, device=device, flip_test=flip_test))


@dataclass
class HeadPoseStage:
    """Yaw / pitch / roll of the person stage's best box (the whole image when that stage did not run).

    Records the angles (null when there is no fit), the number of face landmarks that scored enough, the
    fit's relative reprojection error (`max_fit_error` is its threshold) and a status ("ok", "no_face": too
    few landmarks, e.g. a person seen from behind; "no_fit": the generic face
    does not fit them). Drops (`no_face`) faceless images only when `require_face`, and (`head_pose`) faces
    turned beyond `max_abs_yaw` / `max_abs_pitch` (the defaults, 180 / 90, drop nothing).

    `predictor` is the keypoint model, or a `Loader` building it on first use (see `stages`)."""

    predictor: KeypointPredictor | Loader
    settings: HeadConfig = field(default_factory=HeadConfig)
    name: str = "head"
    fields: dict[str, pa.DataType] = field(default_factory=lambda: {
        "head_yaw": pa.float32(), "head_pitch": pa.float32(), "head_roll": pa.float32(),
        "face_keypoints": pa.int32(), "head_error": pa.float32(), "head_status": pa.string()})

    holds_model: ClassVar[bool] = True

    def model(self) -> KeypointPredictor:
        self.predictor = built(self.predictor)
        return self.predictor

    def __call__(self, batch: Batch) -> dict[str, list]:
        out = _columns(self.fields, len(batch))
        s = self.settings
        images = [batch.image(i) for i in range(len(batch))]
        boxes = [person_box(batch, i) for i in range(len(batch))]
        found = self.model()(images, boxes)
        if len(found) != len(images):
            raise ValueError(f"the keypoint predictor gave {len(found)} results for {len(images)} images")
        rows = face_indices()
        for i, (image, kp) in enumerate(zip(images, found)):
            fit = fit_keypoints(kp, image.shape[:2], s.min_score, s.min_landmarks, s.max_fit_error, rows)
            out["face_keypoints"][i], out["head_status"][i] = fit.landmarks, fit.status
            out["head_error"][i] = fit.error
            if fit.status != OK:
                if s.require_face:
                    out["reason"][i], out["detail"][i] = NO_FACE, fit.why
                continue
            out["head_yaw"][i], out["head_pitch"][i], out["head_roll"][i] = fit.yaw, fit.pitch, fit.roll
            if abs(fit.yaw) > s.max_abs_yaw or abs(fit.pitch) > s.max_abs_pitch:
                out["reason"][i] = HEAD_POSE
                out["detail"][i] = (f"yaw {fit.yaw:.0f}, pitch {fit.pitch:.0f} degrees beyond "
                                    f"{s.max_abs_yaw:g} / {s.max_abs_pitch:g}")
        return out


def person_box(batch: Batch, i: int) -> np.ndarray:
    """The person stage's best box of row `i` in the batch's working pixels (it is stored in the file's
    pixels); the whole image when the person stage did not run."""
    image = batch.image(i)
    h, w = image.shape[:2]
    box = [batch.value(i, f"person_{c}") for c in ("x1", "y1", "x2", "y2")]
    if any(v is None for v in box):
        return whole_image_box(h, w)[0, :4]
    fh, fw = batch.size(i)
    return np.array(box, np.float32) * np.array([w / fw, h / fh, w / fw, h / fh], np.float32)
