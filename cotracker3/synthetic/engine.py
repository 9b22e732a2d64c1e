"""Synthetic 3D videos with complete ground truth, rendered by ray casting.

A scene is a room (a textured ground plane and four walls) holding textured
primitives (boxes, spheres and flat panels), some static, some moving as
independent rigid bodies, and optionally movers of named kinds (constant
velocity on the floor, circling on the floor, flying, a waving cloth: see
:data:`MOVER_KINDS`), seen by a camera that stays still or moves smoothly
(rotation and translation). :func:`render_scene` ray-casts it with torch on
the CPU (no Blender, no OpenGL) and returns the frames together with the
truth for ``N`` surface points:

* 2D tracks and visibility (a point is visible when the first surface hit by
  the ray from the camera centre through it is the point itself),
* 3D world trajectories, per-frame depth maps, intrinsics and camera poses,
* the object each point lies on, whether that object moves and how.

Everything is a deterministic function of ``(SceneConfig, seed)``.

Conventions (those of ``ARCHITECTURE.md``):

* World: right-handed, metres, ``z`` up, the ground is the plane ``z = 0``.
* Cameras: OpenCV (``x`` right, ``y`` down, ``z`` forward), poses are
  ``cam_from_world`` ``(T, 4, 4)``; ``K`` maps camera coordinates to pixels
  ``(x, y)`` with ``(0, 0)`` the centre of the top-left pixel (so
  ``cx = (W - 1) / 2`` for a centred principal point).
* Depth maps hold the ``z`` coordinate in the camera frame (not the distance
  along the ray), ``inf`` where a ray hits nothing.

The named sets of scenes (the held-out evaluation set, the reconstruction
tiers, the training stream and the calibration set, each with its seeds) are in
:mod:`cotracker3.synthetic.sets`.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

QUAD, BOX, SPHERE, CLOTH = 0, 1, 2, 3
"""Primitive kinds. A quad is the rectangle ``|x| <= a, |y| <= b`` of its local ``z = 0`` plane;
a cloth is a quad displaced along its local ``z`` by a height field that changes with time
(the ``"cloth"`` mover of :data:`MOVER_KINDS`)."""

TEXTURE_SIZE = 256
"""Side of a texture in the atlas, pixels."""

PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "colorwheel", "brick", "grass", "gravel", "camera", "moon", "coins", "text", "page",
)
"""Photographs shipped inside scikit-image (``skimage.data``) used as textures."""

_EPS = 1e-4  # smallest ray parameter counted as a hit (metres)

CAMERA_MODES = ("moving", "static", "pan", "pan_walk")
"""Camera motions of :attr:`SceneConfig.camera`."""

MOVER_KINDS = ("slide", "circle", "fly", "cloth")
"""Kinds of :attr:`SceneConfig.movers`, each a known, labelled motion (speeds scaled by
:attr:`SceneConfig.object_speed`; "per clip" is from the first frame to the last):

* ``"slide"``: a box or sphere resting on the floor (its lowest point at ``z = 0``),
  translating along the floor at constant velocity (1-2.5 m per clip), orientation
  fixed: every point's world velocity is constant.
* ``"circle"``: a box or sphere resting on the floor, its centre on a horizontal circle
  (radius 1-2 m, 0.4-0.8 of a turn per clip), turning about the vertical with its
  heading: every point keeps its height and accelerates.
* ``"fly"``: a box or sphere in mid-air (centre 1-2.5 m above the floor, never touching
  it) on a curved 3D path whose height and speed change, rotating about a tilted axis:
  accelerating in all three directions, at no constant height.
* ``"cloth"``: a non-rigid rectangle (1.2-2 m wide, 1-1.5 m tall, bottom edge 0.2-0.6 m
  above the floor) standing vertically and waving in place: the material point
  ``(u, v)`` of its plane (``v`` up) moves along the plane's normal by
  ``w = A g(v) sin(k u - omega t + phi)``, ``A`` 0.15-0.3 m, ``g`` rising from 0 at
  the top edge (where it hangs) to 1 at the bottom, about one wavelength across, 2-3
  cycles per clip.
"""


# --------------------------------------------------------------------------
# Configuration and result
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneConfig:
    """What a synthetic scene contains and how it moves.

    Attributes:
        num_frames: frames ``T``.
        height, width: frame size in pixels.
        num_points: surface points ``N`` with ground truth.
        num_dynamic: independently moving rigid objects.
        num_static: static props standing on the ground (besides ground and walls).
        num_exiting: how many of the moving objects sweep sideways out of the
            view and back in.
        num_occluders: small moving objects passing between camera and scene.
        camera: ``"moving"`` (smooth arc with rotation and translation), ``"static"``,
            ``"pan"`` (a nodal pan: the camera turns about its own centre, which
            never moves, so no frame pair has parallax) or ``"pan_walk"`` (a nodal
            pan over the first half of the clip, then a walk: the centre moves).
        camera_speed: scales the camera's sweep (1: about 25 degrees of arc per clip).
        object_speed: scales the objects' translation and rotation per clip.
        fov_deg: range of the horizontal field of view, degrees (drawn per scene).
        dynamic_point_fraction: share of the points sampled on moving objects
            (where moving objects are in view; with ``movers``, shared equally among
            the moving objects in view rather than by their area in the image).
        photo_fraction: share of textures taken from photographs (the rest procedural).
        supersample: colour is averaged over ``supersample**2`` rays per pixel
            (anti-aliasing); depth, segmentation and tracks use pixel centres.
        movers: extra moving objects of the named kinds of :data:`MOVER_KINDS`
            (repeats allowed), placed where the camera sees them and apart from
            the other objects. They are drawn from a random stream of their own:
            the rest of the scene (camera, objects, textures, light) is that of
            ``movers=()``; only the sampled points differ.
    """

    num_frames: int = 24
    height: int = 256
    width: int = 256
    num_points: int = 256
    num_dynamic: int = 3
    num_static: int = 3
    num_exiting: int = 1
    num_occluders: int = 0
    camera: str = "moving"
    camera_speed: float = 1.0
    object_speed: float = 1.0
    fov_deg: tuple[float, float] = (45.0, 65.0)
    dynamic_point_fraction: float = 0.5
    photo_fraction: float = 0.6
    supersample: int = 2
    movers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.num_frames < 1 or self.height < 2 or self.width < 2:
            raise ValueError(f"a scene needs at least 1 frame of 2x2 pixels, got "
                             f"{self.num_frames} frames of {self.width}x{self.height}")
        if self.num_points < 0:
            raise ValueError(f"num_points must be >= 0, got {self.num_points}")
        if min(self.num_dynamic, self.num_static, self.num_exiting, self.num_occluders) < 0:
            raise ValueError("object counts must be >= 0")
        if self.num_exiting > self.num_dynamic:
            raise ValueError(f"num_exiting ({self.num_exiting}) cannot exceed num_dynamic ({self.num_dynamic})")
        if self.camera not in CAMERA_MODES:
            raise ValueError(f"camera must be one of {', '.join(map(repr, CAMERA_MODES))}, got {self.camera!r}")
        if self.supersample < 1:
            raise ValueError(f"supersample must be >= 1, got {self.supersample}")
        if not 0.0 <= self.dynamic_point_fraction <= 1.0 or not 0.0 <= self.photo_fraction <= 1.0:
            raise ValueError("dynamic_point_fraction and photo_fraction must lie in [0, 1]")
        if isinstance(self.movers, str):
            raise ValueError(f"movers is a sequence of kinds, e.g. ({self.movers!r},), got the string {self.movers!r}")
        object.__setattr__(self, "movers", tuple(self.movers))  # lists from JSON configurations
        unknown = [m for m in self.movers if m not in MOVER_KINDS]
        if unknown:
            raise ValueError(f"unknown mover kind(s) {', '.join(map(repr, unknown))}; "
                             f"kinds: {', '.join(map(repr, MOVER_KINDS))}")


@dataclass
class SyntheticScene:
    """A rendered scene and its ground truth (unbatched numpy arrays).

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        tracks: ``(T, N, 2)`` float32 pixels ``(x, y)``, ``(0, 0)`` the centre of the
            top-left pixel; the projection of ``trajectories`` (also where not visible).
        visibility: ``(T, N)`` bool: in front of the camera, inside the frame and
            not hidden by any surface.
        trajectories: ``(T, N, 3)`` float64 world coordinates of each point.
        depth: ``(T, H, W)`` float32 camera ``z`` at pixel centres, ``inf`` on the sky.
        segmentation: ``(T, H, W)`` int16 object id at pixel centres, ``-1`` on the sky.
        K: ``(3, 3)`` float64 intrinsics (the same for every frame).
        cam_from_world: ``(T, 4, 4)`` float64 OpenCV camera poses.
        object_id: ``(N,)`` int16 object each point lies on.
        is_dynamic: ``(N,)`` bool: the point's object moves.
        object_dynamic: ``(num_objects,)`` bool: which objects move (id order).
        object_kind: ``(num_objects,)`` int8: :data:`QUAD`, :data:`BOX`, :data:`SPHERE`
            or :data:`CLOTH`.
        object_motion: ``(num_objects,)`` str: how each object moves: ``"static"``
            (ground, walls, props), ``"rigid"`` (the random movers and occluders) or
            the kind of a :attr:`SceneConfig.movers` entry (:data:`MOVER_KINDS`);
            ``"static"`` exactly where ``object_dynamic`` is false.
        query_frame: ``(N,)`` int64: the frame each point was sampled at (visible there).
        config: the :class:`SceneConfig`.
        seed: the seed.
    """

    frames: np.ndarray
    tracks: np.ndarray
    visibility: np.ndarray
    trajectories: np.ndarray
    depth: np.ndarray
    segmentation: np.ndarray
    K: np.ndarray
    cam_from_world: np.ndarray
    object_id: np.ndarray
    is_dynamic: np.ndarray
    object_dynamic: np.ndarray
    object_kind: np.ndarray
    object_motion: np.ndarray
    query_frame: np.ndarray
    config: SceneConfig
    seed: int
    name: str = ""

    @property
    def queries(self) -> np.ndarray:
        """``(N, 3)`` float32 ``(t, x, y)``: each point at the frame it was sampled at."""
        n = np.arange(len(self.query_frame))
        xy = self.tracks[self.query_frame, n]
        return np.concatenate([self.query_frame[:, None].astype(np.float32), xy], axis=1)

    @property
    def scene_extent(self) -> float:
        """Diagonal of the bounding box of the camera centres and the points' positions, metres."""
        centres = camera_centres(self.cam_from_world)
        pts = self.trajectories.reshape(-1, 3)
        allp = np.concatenate([centres, pts[np.isfinite(pts).all(1)]])
        return float(np.linalg.norm(allp.max(0) - allp.min(0)))


@dataclass
class _Wave:
    """A cloth's height field over its rectangle ``|u| <= a, |v| <= b``: at frame ``f``
    the material point ``(u, v)`` lies at local ``(u, v, w)``,
    ``w = amplitude * g(v) * sin(wavenumber * u + phase[f])``, ``g(v) = ((b - v) / 2b)**2``
    (0 at the top edge ``v = b``, 1 at the bottom)."""

    amplitude: float
    wavenumber: float  # radians per metre along u
    b: float  # half height of the rectangle
    phase: np.ndarray  # (T,) radians

    def height(self, u: torch.Tensor, v: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """``w`` at ``(u, v)`` for ``phase`` (broadcast together)."""
        s = (self.b - v) / (2 * self.b)
        return self.amplitude * s * s * torch.sin(self.wavenumber * u + phase)

    def slope(self, u: torch.Tensor, v: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``dw/du`` and ``dw/dv`` at ``(u, v)`` for ``phase`` (broadcast together)."""
        s = (self.b - v) / (2 * self.b)
        arg = self.wavenumber * u + phase
        return self.amplitude * s * s * self.wavenumber * torch.cos(arg), -self.amplitude * s / self.b * torch.sin(arg)


@dataclass
class _Object:
    kind: int
    half: np.ndarray  # (3,) half extents; quad: (a, b, 0); sphere: (r, r, r); cloth: (a, b, amplitude)
    rotation: np.ndarray  # (T, 3, 3) world_from_object
    position: np.ndarray  # (T, 3)
    texture: int  # atlas slot
    repeat: float = 1.0
    motion: str = "static"  # a value of SyntheticScene.object_motion
    wave: _Wave | None = None  # cloth only

    @property
    def dynamic(self) -> bool:
        return self.motion != "static"


# --------------------------------------------------------------------------
# Small geometry helpers
# --------------------------------------------------------------------------


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """``(T, 3)`` camera centres in world coordinates of ``(T, 4, 4)`` poses."""
    R, t = cam_from_world[:, :3, :3], cam_from_world[:, :3, 3]
    return -np.einsum("tji,tj->ti", R, t)


def project(points: np.ndarray, K: np.ndarray, cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points through the cameras.

    Args:
        points: ``(T, N, 3)`` world coordinates.
        K: ``(3, 3)`` intrinsics; cam_from_world: ``(T, 4, 4)``.

    Returns:
        ``(T, N, 2)`` pixels ``(x, y)`` and ``(T, N)`` camera depth ``z``.
    """
    cam = np.einsum("tij,tnj->tni", cam_from_world[:, :3, :3], points) + cam_from_world[:, None, :3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = cam[..., :2] / z[..., None]
    xy = uv * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return xy, z


def _rotation(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations about a unit ``axis`` by each of ``angle`` (radians) -> ``(len, 3, 3)``."""
    axis = axis / np.linalg.norm(axis)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.asarray(angle, dtype=np.float64)[:, None, None]
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


def _look_at(eye: np.ndarray, target: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """OpenCV ``cam_from_world`` ``(T, 4, 4)`` for cameras at ``eye`` looking at ``target`` (z up)."""
    f = target - eye
    f /= np.linalg.norm(f, axis=-1, keepdims=True)
    r = np.cross(f, np.array([0.0, 0.0, 1.0]))
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    d = np.cross(f, r)
    c, s = np.cos(roll)[:, None], np.sin(roll)[:, None]
    r, d = c * r + s * d, -s * r + c * d
    pose = np.tile(np.eye(4), (len(eye), 1, 1))
    pose[:, :3, :3] = np.stack([r, d, f], axis=1)  # rows: camera axes in world
    pose[:, :3, 3] = -np.einsum("tij,tj->ti", pose[:, :3, :3], eye)
    return pose


# --------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> tuple[np.ndarray, bool]:
    """A photograph of ``skimage.data`` as ``(H, W, 3)`` float32, and whether it is grey."""
    from skimage import data  # imported here: only scenes need it

    img = np.asarray(getattr(data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    grey = img.ndim == 2
    if grey:
        img = np.repeat(img[..., None], 3, axis=2)
    img = np.ascontiguousarray(img[..., :3].astype(np.float32))
    img.setflags(write=False)
    return img, grey


def _photo_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    img, grey = _photo(PHOTOS[rng.integers(len(PHOTOS))])
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    tex = cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
    if grey:
        tex = tex * rng.uniform(0.5, 1.0, size=3)  # tint grey photographs
    if rng.random() < 0.5:
        tex = tex[:, ::-1]
    return tex


def _smooth_noise(rng: np.random.Generator, size: int, octaves: int = 4) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    for o in range(octaves):
        cells = 4 * 2 ** o
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        out += cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC) / 2 ** o
    out -= out.min()
    return out / max(out.max(), 1e-6)


def _procedural_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    style = rng.integers(4)
    if style == 0:  # coloured noise
        m = _smooth_noise(rng, size)
    elif style == 1:  # checkerboard
        n = rng.integers(3, 12)
        m = ((np.floor(xx * n) + np.floor(yy * n)) % 2).astype(np.float32)
    elif style == 2:  # stripes
        a = rng.uniform(0, np.pi)
        m = 0.5 + 0.5 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * rng.uniform(8, 40))
    else:  # dots
        m = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(20, 60))):
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.circle(m, centre, int(rng.integers(3, size // 8)), float(rng.uniform(0.3, 1.0)), -1)
    m = np.clip(0.8 * m + 0.2 * _smooth_noise(rng, size, octaves=3), 0, 1)
    tex = c0 + (c1 - c0) * m[..., None]
    return tex + rng.normal(0, 6, size=tex.shape)  # fine grain helps trackers, as real surfaces do


def _texture(rng: np.random.Generator, photo_fraction: float) -> np.ndarray:
    """A texture ``(TEXTURE_SIZE, TEXTURE_SIZE, 3)``: a photograph with probability ``photo_fraction``,
    else procedural."""
    if rng.random() < photo_fraction:
        return _photo_texture(rng, TEXTURE_SIZE)
    return _procedural_texture(rng, TEXTURE_SIZE)


# --------------------------------------------------------------------------
# Scene layout and motion
# --------------------------------------------------------------------------

_ROOM = 12.0  # half side of the room (ground plane), metres
_WALL_HEIGHT = 7.0
_STAND = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)  # a quad standing up: local y is world z


def _static(T: int, position, rotation=None) -> tuple[np.ndarray, np.ndarray]:
    rot = np.eye(3) if rotation is None else rotation
    return np.tile(rot, (T, 1, 1)), np.tile(np.asarray(position, np.float64), (T, 1))


def _disc(rng: np.random.Generator, r_max: float) -> np.ndarray:
    """A point ``(x, y)`` drawn uniformly from the disc of radius ``r_max`` about the room centre."""
    r, a = r_max * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    return np.array([r * math.cos(a), r * math.sin(a)])


def _random_primitive(rng: np.random.Generator, scale: tuple[float, float]) -> tuple[int, np.ndarray]:
    kind = int(rng.choice([BOX, SPHERE, QUAD], p=[0.45, 0.35, 0.2]))
    s = rng.uniform(*scale)
    if kind == BOX:
        return kind, s * rng.uniform(0.6, 1.0, size=3)
    if kind == SPHERE:
        return kind, np.full(3, s)
    return kind, np.array([s * rng.uniform(0.8, 1.4), s * rng.uniform(0.8, 1.4), 0.0])


def _layout(cfg: SceneConfig, rng: np.random.Generator) -> tuple[list[_Object], np.ndarray, np.ndarray, int]:
    """Objects, ``K``, ``cam_from_world`` and the number of textures for a scene."""
    T = cfg.num_frames
    tau = np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)

    # Camera: an arc around the room centre, looking at a point that drifts.
    fov = math.radians(rng.uniform(*cfg.fov_deg))
    fx = (cfg.width / 2) / math.tan(fov / 2)
    K = np.array([[fx, 0, (cfg.width - 1) / 2], [0, fx, (cfg.height - 1) / 2], [0, 0, 1.0]])
    az0 = rng.uniform(0, 2 * np.pi)
    radius0, height0 = rng.uniform(7.0, 9.0), rng.uniform(1.6, 3.5)
    target0 = np.array([*rng.uniform(-0.8, 0.8, 2), rng.uniform(0.4, 1.2)])
    if cfg.camera == "moving":
        sweep = cfg.camera_speed * math.radians(rng.uniform(15, 35)) * rng.choice([-1, 1])
        ease = 0.5 - 0.5 * np.cos(np.pi * tau)  # smooth start and stop
        az = az0 + sweep * (0.3 * tau + 0.7 * ease)
        radius = radius0 + cfg.camera_speed * rng.uniform(-1.5, 1.0) * tau
        height = height0 + cfg.camera_speed * rng.uniform(0.2, 0.8) * np.sin(np.pi * tau) * rng.choice([-1, 1])
        drift = cfg.camera_speed * rng.uniform(-0.6, 0.6, size=3) * np.sin(0.5 * np.pi * tau)[:, None]
        roll = cfg.camera_speed * math.radians(rng.uniform(-4, 4)) * np.sin(np.pi * tau)
    else:
        az, radius, height = np.full(T, az0), np.full(T, radius0), np.full(T, height0)
        drift, roll = np.zeros((T, 3)), np.zeros(T)
    eye = np.stack([radius * np.cos(az), radius * np.sin(az), np.maximum(height, 0.5)], axis=1)
    target = target0 + drift
    if cfg.camera in ("pan", "pan_walk"):
        # The view direction turns about the vertical through the (fixed) centre, with a little tilt.
        pan_end = 1.0 if cfg.camera == "pan" else 0.5
        phase = np.clip(tau / pan_end, 0.0, 1.0)
        ease = 0.5 - 0.5 * np.cos(np.pi * phase)
        yaw = cfg.camera_speed * math.radians(rng.uniform(20, 35)) * rng.choice([-1, 1]) * ease
        tilt = cfg.camera_speed * rng.uniform(-0.4, 0.4) * np.sin(np.pi * phase)
        look = target0 - eye[0]
        target = eye[0] + np.einsum("tij,j->ti", _rotation(np.array([0, 0, 1.0]), yaw), look)
        target[:, 2] += tilt
        roll = cfg.camera_speed * math.radians(rng.uniform(-3, 3)) * np.sin(np.pi * phase)
        eye = np.tile(eye[:1], (T, 1))
        if cfg.camera == "pan_walk":
            # Then walk about 1.5-2.5 m sideways and forwards, still looking where the pan ended.
            walk = 0.5 - 0.5 * np.cos(np.pi * np.clip((tau - pan_end) / (1 - pan_end), 0.0, 1.0))
            f_end = target[-1] - eye[0]
            f_end[2] = 0.0
            f_end /= np.linalg.norm(f_end)
            side = np.cross(f_end, [0, 0, 1.0])
            step = rng.uniform(1.5, 2.5) * (rng.choice([-1, 1]) * 0.8 * side + 0.6 * f_end)
            eye = eye + walk[:, None] * step
            target = target + walk[:, None] * step
    cam_from_world = _look_at(eye, target, roll)

    objects: list[_Object] = []
    slot = 0
    # Ground and walls: static quads with repeated textures.
    rot, pos = _static(T, [0, 0, 0])
    objects.append(_Object(QUAD, np.array([_ROOM, _ROOM, 0]), rot, pos, slot, repeat=float(rng.uniform(4, 8))))
    slot += 1
    for k in range(4):
        a = k * np.pi / 2
        normal = -np.array([np.cos(a), np.sin(a), 0.0])  # facing the room
        # local x along the wall, local y up, local z = normal
        R = np.stack([np.cross([0, 0, 1.0], normal), [0, 0, 1.0], normal], axis=1)
        rot, pos = _static(T, [-_ROOM * normal[0], -_ROOM * normal[1], _WALL_HEIGHT / 2], R)
        objects.append(_Object(QUAD, np.array([_ROOM, _WALL_HEIGHT / 2, 0]), rot, pos, slot,
                               repeat=float(rng.uniform(2, 4))))
        slot += 1

    # Static props resting on the ground.
    for _ in range(cfg.num_static):
        kind, half = _random_primitive(rng, (0.4, 1.1))
        R = _rotation(np.array([0, 0, 1.0]), np.array([rng.uniform(0, 2 * np.pi)]))[0]
        if kind == QUAD:  # a standing panel
            R = R @ _STAND
            lift = half[1]
        else:
            lift = half[2]
        rot, pos = _static(T, [*_disc(rng, 4.5), lift], R)
        objects.append(_Object(kind, half, rot, pos, slot))
        slot += 1

    # Camera frame at the start: to aim exits and occluders.
    right0 = cam_from_world[0, 0, :3]
    forward0 = cam_from_world[0, 2, :3]
    centre0 = eye[0]

    def rigid_motion(start: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray]:
        direction = rng.normal(size=3) * np.array([1, 1, 0.3])
        direction /= np.linalg.norm(direction)
        velocity = speed * rng.uniform(1.0, 3.0) * direction  # metres per clip
        wobble = speed * rng.uniform(0.0, 0.6, size=3) * np.array([1, 1, 0.5])
        omega, phase = rng.uniform(1, 3) * 2 * np.pi, rng.uniform(0, 2 * np.pi, size=3)
        position = start + velocity * (tau[:, None] - 0.5) + wobble * np.sin(omega * tau[:, None] + phase)
        angle = speed * rng.uniform(0.5, 3.0) * rng.choice([-1, 1]) * tau + rng.uniform(0, 2 * np.pi)
        return _rotation(rng.normal(size=3), angle), position

    for i in range(cfg.num_dynamic):
        kind, half = _random_primitive(rng, (0.35, 0.9))
        start = np.array([*_disc(rng, 3.5), rng.uniform(0.5, 2.5)])
        rot, position = rigid_motion(start, cfg.object_speed)
        if i < cfg.num_exiting:
            # Sweep sideways past the edge of the view and back (and out the other side).
            depth = float(np.dot(start - centre0, forward0))
            half_width = max(depth, 1.0) * (cfg.width / 2) / fx
            amplitude = 1.4 * half_width + np.abs(half).max()
            position = position + amplitude * np.sin(2 * np.pi * tau)[:, None] * right0
        position[:, 2] = np.maximum(position[:, 2], np.abs(half).max() * 0.5)
        objects.append(_Object(kind, half, rot, position, slot, motion="rigid"))
        slot += 1

    for _ in range(cfg.num_occluders):
        kind, half = _random_primitive(rng, (0.25, 0.6))
        depth = rng.uniform(2.5, 4.0)  # metres in front of the first camera position
        half_width = depth * (cfg.width / 2) / fx
        lateral = rng.uniform(-1, 1) * half_width
        start = centre0 + depth * forward0 + lateral * right0
        start[2] = max(start[2] + rng.uniform(-0.8, 0.4), 0.4)
        rot, position = rigid_motion(start, 0.4 * cfg.object_speed)
        sweep = rng.uniform(1.0, 2.0) * half_width * rng.choice([-1, 1])
        position = position + sweep * np.sin(np.pi * tau + rng.uniform(0, np.pi))[:, None] * right0
        objects.append(_Object(kind, half, rot, position, slot, motion="rigid"))
        slot += 1
    return objects, K, cam_from_world, slot


def _solid(rng: np.random.Generator, scale: tuple[float, float]) -> tuple[int, np.ndarray]:
    """A box or a sphere of about ``scale`` metres (half extents)."""
    s = rng.uniform(*scale)
    if rng.random() < 0.6:
        return BOX, s * rng.uniform(0.6, 1.0, size=3)
    return SPHERE, np.full(3, s)


def _mover(kind: str, rng: np.random.Generator, tau: np.ndarray, speed: float, camera: np.ndarray) -> _Object:
    """One mover of ``kind`` (:data:`MOVER_KINDS`), its texture slot still unset: within
    2-3.5 m of the room centre, or for a cloth 1.5-3 m beyond it as seen from ``camera``
    (a camera centre), facing the camera give or take 35 degrees."""
    T = len(tau)
    up = np.array([0, 0, 1.0])
    spin = rng.uniform(0, 2 * np.pi)
    if kind == "cloth":
        a, b, amplitude = rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.75), rng.uniform(0.15, 0.3)
        # A backdrop to the others: 1.5-3 m beyond the room centre as the camera sees it.
        away = -camera[:2] / np.linalg.norm(camera[:2])
        beyond = rng.uniform(1.5, 3.0) * away + rng.uniform(-2.0, 2.0) * np.array([-away[1], away[0]])
        centre = np.array([*beyond, rng.uniform(0.2, 0.6) + b])
        dx, dy = camera[:2] - centre[:2]
        facing = math.atan2(dy, dx) + rng.uniform(-0.6, 0.6)
        # Local x along the floor, local y up, the normal (local z) horizontal at azimuth `facing`.
        R = _rotation(up, np.array([facing + np.pi / 2]))[0] @ _STAND
        wavenumber = 2 * np.pi * rng.uniform(0.8, 1.2) / (2 * a)  # about one wavelength across
        omega = 2 * np.pi * speed * rng.uniform(2.0, 3.0)  # radians per clip
        wave = _Wave(amplitude, wavenumber, b, rng.uniform(0, 2 * np.pi) - omega * tau)
        rot, pos = _static(T, centre, R)
        return _Object(CLOTH, np.array([a, b, amplitude]), rot, pos, -1, motion=kind, wave=wave)
    if kind == "slide":
        prim, half = _solid(rng, (0.45, 0.8))
        heading = rng.uniform(0, 2 * np.pi)
        velocity = speed * rng.uniform(1.0, 2.5) * np.array([math.cos(heading), math.sin(heading), 0.0])
        position = np.array([*_disc(rng, 3.5), half[2]]) + velocity * (tau[:, None] - 0.5)
        rot = np.tile(_rotation(up, np.array([spin]))[0], (T, 1, 1))
    elif kind == "circle":
        prim, half = _solid(rng, (0.45, 0.8))
        radius = rng.uniform(1.0, 2.0)
        angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * 2 * np.pi * speed * rng.uniform(0.4, 0.8) * tau
        centre = _disc(rng, 2.0)
        position = np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle),
                             np.full(T, half[2])], axis=1)
        rot = _rotation(up, angle + spin)  # turning with its heading
    else:  # fly
        prim, half = _solid(rng, (0.4, 0.6))
        radius = rng.uniform(1.0, 2.0)  # of the horizontal arc
        sweep = rng.choice([-1, 1]) * speed * rng.uniform(0.6, 1.4)  # radians of arc per clip
        change = rng.choice([-1, 1]) * rng.uniform(0.3, 0.7)  # the speed: from 1 - change to 1 + change times its mean
        angle = rng.uniform(0, 2 * np.pi) + sweep * (tau + change * (tau ** 2 - tau))
        mean = np.array([*_disc(rng, 3.0), rng.uniform(1.6, 2.0)])  # its mean position, give or take the bobbing
        arc = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        cycles = speed * rng.uniform(0.6, 1.0)  # of bobbing up and down per clip
        bob = rng.uniform(0.25, 0.45) * np.sin(2 * np.pi * cycles * tau + rng.uniform(0, 2 * np.pi))
        position = mean + np.concatenate([arc - arc.mean(0), bob[:, None]], axis=1)
        tilt, azimuth = rng.uniform(math.radians(25), math.radians(65)), rng.uniform(0, 2 * np.pi)
        axis = np.array([math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), math.cos(tilt)])
        turns = rng.choice([-1, 1]) * speed * rng.uniform(0.2, 0.5)
        start = _rotation(rng.normal(size=3), np.array([spin]))[0]
        rot = _rotation(axis, 2 * np.pi * turns * tau) @ start
    return _Object(prim, half, rot, position, -1, motion=kind)


def _bounding_radius(obj: _Object) -> float:
    """Radius of a sphere about the object's origin that holds it (a cloth's waves included)."""
    return float(obj.half[0]) if obj.kind == SPHERE else float(np.linalg.norm(obj.half))


def _hides(camera: np.ndarray, target: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """``(T,)`` whether the sphere ``(centre (T, 3), radius)`` meets the sight line from
    ``camera (T, 3)`` to ``target (T, 3)`` short of the target."""
    sight = target - camera
    s = np.clip(((centre - camera) * sight).sum(-1) / (sight * sight).sum(-1), 0.0, 1.0)
    return (s < 1.0) & (np.linalg.norm(camera + s[:, None] * sight - centre, axis=-1) < radius)


_MOVER_DRAWS = 256  # layouts tried per mover
_PLACEMENT_ORDER = ("cloth", "circle", "slide", "fly")  # the movers needing the most room first


def _lay_out_movers(cfg: SceneConfig, rng: np.random.Generator, objects: list[_Object], K: np.ndarray,
                    cam_from_world: np.ndarray, first_slot: int) -> list[_Object]:
    """The movers of ``cfg.movers``, in order, with texture slots from ``first_slot`` on.

    They are laid out in :data:`_PLACEMENT_ORDER`, each the first of up to
    :data:`_MOVER_DRAWS` draws that keeps its bounding sphere 5 cm from those of
    the other objects (props, moving objects, the movers laid out before it) in
    every frame, and that the camera sees in 80% of the frames: its centre in
    front (half a metre beyond its sphere), inside the middle 90% of the frame,
    the sight line to it clear of the others' spheres, and its own sphere clear
    of the sight lines to the movers laid out before it. Failing that, the draw
    that does best (no overlap first, then the most frames seen).
    """
    T = cfg.num_frames
    tau = np.linspace(0.0, 1.0, T) if T > 1 else np.zeros(1)
    cameras = camera_centres(cam_from_world)
    others = [(o.position, _bounding_radius(o)) for o in objects[5:]]  # all but the ground and the walls
    lo, hi = np.array([0.05 * cfg.width, 0.05 * cfg.height]), np.array([0.95 * cfg.width, 0.95 * cfg.height])
    order = sorted(range(len(cfg.movers)), key=lambda k: _PLACEMENT_ORDER.index(cfg.movers[k]))
    placed: dict[int, _Object] = {}
    for k in order:
        kind = cfg.movers[k]
        best, best_key = None, None
        for _ in range(_MOVER_DRAWS):
            obj = _mover(kind, rng, tau, cfg.object_speed, cameras[T // 2])
            r = _bounding_radius(obj)
            clear = all((np.linalg.norm(obj.position - pos, axis=1) > r + r_o + 0.05).all() for pos, r_o in others)
            xy, z = project(obj.position[:, None], K, cam_from_world)
            seen = (z[:, 0] > r + 0.5) & (xy[:, 0] >= lo).all(-1) & (xy[:, 0] <= hi).all(-1)
            for pos, r_o in others:
                seen &= ~_hides(cameras, obj.position, pos, r_o)
            for m in placed.values():
                seen &= ~_hides(cameras, m.position, obj.position, r)
            key = (clear, seen.mean() >= 0.8, seen.mean())
            if best_key is None or key > best_key:
                best, best_key = obj, key
            if key[:2] == (True, True):
                break
        if best_key[:2] != (True, True):
            logger.debug("mover %d (%s): no draw clear of the others and in view in 80%% of the frames; "
                         "the best: clear %s, in view in %.0f%%", k, kind, best_key[0], 100 * best_key[2])
        best.texture = first_slot + k
        placed[k] = best
        others.append((best.position, _bounding_radius(best)))
    return [placed[k] for k in range(len(cfg.movers))]


# --------------------------------------------------------------------------
# Ray casting
# --------------------------------------------------------------------------


class _Caster:
    """Ray casting against a scene's objects, batched over frames.

    Rays are given per "batch" element ``b`` (a frame, or a (point, frame) pair)
    with origins ``(B, 1 or R, 3)`` and unit directions ``(B, R, 3)``, and the
    frame index of each batch element selects the objects' poses.
    """

    def __init__(self, objects: list[_Object]):
        self.objects = objects
        self.rot = [torch.from_numpy(o.rotation).float() for o in objects]
        self.pos = [torch.from_numpy(o.position).float() for o in objects]
        self.phase = [None if o.wave is None else torch.from_numpy(o.wave.phase).float() for o in objects]

    def cast(self, origin: torch.Tensor, dirs: torch.Tensor, frame: torch.Tensor):
        """First hits: ray parameter ``(B, R)`` (inf: none), object ``(B, R)`` (-1: none),
        hit point in the object's frame ``(B, R, 3)``."""
        B, R = dirs.shape[:2]
        best_t = torch.full((B, R), math.inf)
        best_obj = torch.full((B, R), -1, dtype=torch.int64)
        best_local = torch.zeros(B, R, 3)
        for i, obj in enumerate(self.objects):
            rot, pos = self.rot[i][frame], self.pos[i][frame]  # (B, 3, 3), (B, 3)
            o = torch.einsum("bji,brj->bri", rot, origin - pos[:, None])  # rot^T (origin - pos)
            d = torch.einsum("bji,brj->bri", rot, dirs)
            t = self._intersect(obj, o, d, None if self.phase[i] is None else self.phase[i][frame][:, None])
            closer = t < best_t
            if not bool(closer.any()):
                continue
            best_t = torch.where(closer, t, best_t)
            best_obj = torch.where(closer, torch.full_like(best_obj, i), best_obj)
            best_local = torch.where(closer[..., None], o + t.nan_to_num(0, 0, 0)[..., None] * d, best_local)
        return best_t, best_obj, best_local

    @staticmethod
    def _intersect(obj: _Object, o: torch.Tensor, d: torch.Tensor, phase: torch.Tensor | None) -> torch.Tensor:
        """Ray parameter of the first hit (inf: none) of local rays ``o + t d`` on ``obj``;
        ``phase``: a cloth's wave phase, broadcast against the rays (``None`` for the others)."""
        inf = torch.tensor(math.inf)
        a, b, c = (float(v) for v in obj.half)
        if obj.kind == CLOTH:
            return _cloth_hit(obj.wave, obj.half, o, d, phase)
        if obj.kind == QUAD:
            with torch.no_grad():
                t = -o[..., 2] / d[..., 2]
            x = o[..., 0] + t * d[..., 0]
            y = o[..., 1] + t * d[..., 1]
            ok = (t > _EPS) & (x.abs() <= a) & (y.abs() <= b)
            return torch.where(ok, t, inf)
        if obj.kind == BOX:
            half = torch.tensor([a, b, c])
            inv = 1.0 / d
            t1, t2 = (-half - o) * inv, (half - o) * inv
            near = torch.minimum(t1, t2).amax(-1)
            far = torch.maximum(t1, t2).amin(-1)
            ok = (near <= far) & (near > _EPS)  # a ray starting inside a box sees nothing of it
            return torch.where(ok, near, inf)
        bq = (o * d).sum(-1)
        cq = (o * o).sum(-1) - a * a
        disc = bq * bq - cq
        t = -bq - disc.clamp_min(0).sqrt()
        ok = (disc >= 0) & (cq > 0) & (t > _EPS)
        return torch.where(ok, t, inf)

    def cast_image(self, f: int, K: np.ndarray, pose: np.ndarray, H: int, W: int, ss: int):
        """First hits of the rays through a frame's ``(H*ss, W*ss)`` sample grid.

        Each object is only tested on the window of samples its bounding sphere
        can cover, so small objects cost little.

        Returns:
            ray parameter ``(Hs, Ws)``, object ``(Hs, Ws)``, world ray directions
            ``(Hs, Ws, 3)``, camera ``z`` per unit of ray length ``(Hs, Ws)``.
        """
        Hs, Ws = H * ss, W * ss
        cam_dirs, zlen = _camera_rays((K[0, 0], K[0, 2], K[1, 1], K[1, 2]), H, W, ss)
        dirs = cam_dirs @ torch.from_numpy(pose[:3, :3]).float()  # rows: R^T d
        origin = torch.from_numpy(camera_centres(pose[None])[0]).float()
        best_t = torch.full((Hs, Ws), math.inf)
        best_obj = torch.full((Hs, Ws), -1, dtype=torch.int64)
        self.windows = []
        self.origin = origin
        for i, obj in enumerate(self.objects):
            win = _window(obj, f, K, pose, H, W, ss)
            self.windows.append(win)
            if win is None or win[0][0] == win[0][1] or win[1][0] == win[1][1]:
                self.windows[-1] = None
                continue
            (y0, y1), (x0, x1) = win
            o, d = self._to_local(i, f, origin, dirs[y0:y1, x0:x1])
            t = self._intersect(obj, o, d, None if self.phase[i] is None else self.phase[i][f])
            bt = best_t[y0:y1, x0:x1]
            closer = t < bt
            best_t[y0:y1, x0:x1] = torch.where(closer, t, bt)
            best_obj[y0:y1, x0:x1] = torch.where(closer, i, best_obj[y0:y1, x0:x1])
        return best_t, best_obj, dirs, zlen

    def _to_local(self, i: int, f: int, origin: torch.Tensor, dirs: torch.Tensor):
        """A world ray origin ``(3,)`` and directions ``(..., 3)`` in object ``i``'s frame at frame ``f``."""
        rot, pos = self.rot[i][f], self.pos[i][f]
        return rot.T @ (origin - pos), dirs @ rot  # rows of dirs @ rot: rot^T d

    def shade(self, f: int, t: torch.Tensor, obj: torch.Tensor, dirs: torch.Tensor,
              atlas: torch.Tensor, light: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
        """Colour ``(Hs, Ws, 3)`` of the hits of :meth:`cast_image` (call it first):
        bilinear texture from the atlas times Lambertian shading; ``sky`` where nothing is hit."""
        S = TEXTURE_SIZE
        n_slots = atlas.shape[2] // S
        Hs, Ws = obj.shape
        grid = torch.zeros(Hs, Ws, 2)
        normal = torch.zeros(Hs, Ws, 3)
        for i, o in enumerate(self.objects):
            win = self.windows[i]
            if win is None:
                continue
            (y0, y1), (x0, x1) = win
            m = obj[y0:y1, x0:x1] == i
            if not bool(m.any()):
                continue
            o_l, d_l = self._to_local(i, f, self.origin, dirs[y0:y1, x0:x1])
            p = o_l + t[y0:y1, x0:x1].nan_to_num(0, 0, 0)[..., None] * d_l
            half = torch.from_numpy(o.half).float()
            if o.kind in (QUAD, CLOTH):  # a cloth's texture moves with its material points (u, v)
                scale = o.repeat / max(float(half[0]), float(half[1]))
                u = (p[..., 0] + half[0]) / 2 * scale
                v = (p[..., 1] + half[1]) / 2 * scale
                if o.kind == QUAD:
                    n = torch.tensor([0.0, 0.0, 1.0]).expand_as(p)
                else:
                    w_u, w_v = o.wave.slope(p[..., 0], p[..., 1], self.phase[i][f])
                    n = F.normalize(torch.stack([-w_u, -w_v, torch.ones_like(w_u)], -1), dim=-1)
            elif o.kind == BOX:
                q = p / half
                axis = q.abs().argmax(-1, keepdim=True)
                sign = torch.gather(q, -1, axis) > 0
                face = (2 * axis + sign.long())[..., 0]
                other = torch.tensor([[1, 2], [0, 2], [0, 1]])[axis[..., 0]]
                pu = torch.gather(q, -1, other)
                u = (face % 3 + (pu[..., 0] + 1) / 2) / 3
                v = (face // 3 + (pu[..., 1] + 1) / 2) / 2
                n = torch.zeros_like(p).scatter_(-1, axis, torch.where(sign, 1.0, -1.0))
            else:
                r = p.norm(dim=-1).clamp_min(1e-9)
                u = (torch.atan2(p[..., 1], p[..., 0]) / (2 * math.pi) + 0.5) * 2
                v = torch.acos((p[..., 2] / r).clamp(-1, 1)) / math.pi
                n = p / r[..., None]
            u, v = u - u.floor(), (v - v.floor()).clamp(0.5 / S, 1 - 0.5 / S)
            g = torch.stack([u * 2 - 1, (o.texture + v) / n_slots * 2 - 1], -1)
            grid[y0:y1, x0:x1] = torch.where(m[..., None], g, grid[y0:y1, x0:x1])
            nw = n @ self.rot[i][f].T
            normal[y0:y1, x0:x1] = torch.where(m[..., None], nw, normal[y0:y1, x0:x1])
        tex = F.grid_sample(atlas, grid[None], mode="bilinear", padding_mode="border", align_corners=False)
        tex = tex[0].permute(1, 2, 0)
        facing = (normal * dirs).sum(-1, keepdim=True) > 0
        normal = torch.where(facing, -normal, normal)  # two-sided panels face the viewer
        lit = 0.45 + 0.55 * (normal @ light).clamp_min(0)
        return torch.where((obj >= 0)[..., None], tex * lit[..., None], sky)


_CLOTH_STEPS = 48  # samples along a ray's path through a cloth's box that look for its first crossing
_CLOTH_ITERATIONS = 16  # safeguarded Newton steps refining it (bisection alone: 2**-16 of a sample step)


def _cloth_hit(wave: _Wave, half: np.ndarray, o: torch.Tensor, d: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Ray parameter ``(...)`` of the first crossing (inf: none) of local rays ``o + t d``
    ``(..., 3)`` with a cloth's surface ``z = w(x, y)`` at ``phase`` (broadcast).

    The rays' paths through the box ``|x| <= a, |y| <= b, |z| <= amplitude`` that holds the
    surface are sampled at :data:`_CLOTH_STEPS` points; the first sign change of
    ``F(t) = z(t) - w(x(t), y(t))`` brackets the first crossing, which Newton steps
    (bisection where a step would leave the bracket) refine to about 1e-6 m. Two
    crossings closer than one sample step (a ray grazing a crest) are missed together.
    """
    o = o.expand_as(d)
    box = torch.from_numpy(half).to(d.dtype)
    inv = 1.0 / d
    t1, t2 = (-box - o) * inv, (box - o) * inv
    near = torch.minimum(t1, t2).amax(-1).clamp_min(_EPS)
    far = torch.maximum(t1, t2).amin(-1)
    step = ((far - near) / _CLOTH_STEPS).clamp_min(0)  # 0 where the ray misses the box

    def residual(t: torch.Tensor) -> torch.Tensor:
        p = o + t[..., None] * d
        return p[..., 2] - wave.height(p[..., 0], p[..., 1], phase)

    lo, hi = torch.full_like(near, math.inf), torch.full_like(near, math.inf)
    f_prev = residual(near)
    for j in range(1, _CLOTH_STEPS + 1):
        t = near + j * step
        f = residual(t)
        new = lo.isinf() & (step > 0) & (f_prev * f <= 0)
        lo, hi = torch.where(new, t - step, lo), torch.where(new, t, hi)
        f_prev = f
    found = lo.isfinite()
    lo, hi = torch.where(found, lo, near), torch.where(found, hi, near)
    above = residual(lo) > 0  # the side of the surface the ray comes from
    t = (lo + hi) / 2
    for _ in range(_CLOTH_ITERATIONS):
        p = o + t[..., None] * d
        f = p[..., 2] - wave.height(p[..., 0], p[..., 1], phase)
        w_u, w_v = wave.slope(p[..., 0], p[..., 1], phase)
        before = (f > 0) == above  # the crossing lies beyond t
        lo, hi = torch.where(before & (f != 0), t, lo), torch.where(before & (f != 0), hi, t)
        newton = t - f / (d[..., 2] - w_u * d[..., 0] - w_v * d[..., 1])
        t = torch.where((newton >= lo) & (newton <= hi), newton, (lo + hi) / 2)
    return torch.where(found, t, torch.tensor(math.inf))


def _window(obj: _Object, f: int, K: np.ndarray, pose: np.ndarray, H: int, W: int, ss: int):
    """Rows and columns ``((y0, y1), (x0, x1))`` of the ``ss``-sample grid that an
    object may cover in frame ``f``; ``None`` if it cannot be seen.

    Quads, boxes and cloths (whose box holds their waves): the bounding box of
    their corners' projections, after clipping their edges at a near plane;
    spheres: the exact extent of the projected sphere."""
    R = pose[:3, :3] @ obj.rotation[f]
    centre = pose[:3, :3] @ obj.position[f] + pose[:3, 3]
    if obj.kind == SPHERE:
        return _sphere_window(centre, float(obj.half[0]), K, H, W, ss)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
    corners = centre + (signs * obj.half) @ R.T  # camera coordinates (8, 3)
    near = 1e-3
    front = corners[:, 2] > near
    if not front.any():
        return None
    pts = [corners[front]]
    if not front.all():  # add the points where edges cross the near plane
        for i in range(8):
            for j in range(i + 1, 8):
                if np.abs(signs[i] - signs[j]).sum() == 2 and front[i] != front[j]:
                    a, b = corners[i], corners[j]
                    w = (near - a[2]) / (b[2] - a[2])
                    pts.append((a + w * (b - a))[None])
    p = np.concatenate(pts)
    x = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
    y = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
    return _span(y.min(), y.max(), H, ss), _span(x.min(), x.max(), W, ss)


def _span(lo: float, hi: float, size: int, ss: int):
    # sample j of the ss-grid sits at pixel (j + 0.5) / ss - 0.5
    j0 = max(0, math.floor((lo + 0.5) * ss - 0.5) - 1) if lo > -1e9 else 0
    j1 = min(size * ss, math.ceil((hi + 0.5) * ss - 0.5) + 2) if hi < 1e9 else size * ss
    return (j0, j1) if j0 < j1 else (0, 0)


def _sphere_window(c: np.ndarray, rho: float, K: np.ndarray, H: int, W: int, ss: int):
    spans = []
    for axis, size in ((1, H), (0, W)):  # rows from y, columns from x
        lateral, z = float(c[axis]), float(c[2])
        dist = math.hypot(lateral, z)
        if dist <= rho * 1.001:
            return (0, H * ss), (0, W * ss)  # the camera is (nearly) inside the sphere
        theta, alpha = math.atan2(lateral, z), math.asin(rho / dist)
        lo, hi = theta - alpha, theta + alpha
        if hi <= -math.pi / 2 or lo >= math.pi / 2:
            return None  # behind the camera
        focal, centre = K[axis, axis], K[axis, 2]
        p_lo = focal * math.tan(lo) + centre if lo > -math.pi / 2 + 1e-6 else -math.inf
        p_hi = focal * math.tan(hi) + centre if hi < math.pi / 2 - 1e-6 else math.inf
        spans.append(_span(p_lo, p_hi, size, ss))
    return spans[0], spans[1]


@functools.lru_cache(maxsize=8)
def _camera_rays(K: tuple, H: int, W: int, ss: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit ray directions in the camera frame ``(H*ss, W*ss, 3)`` and their ``z`` per unit length."""
    fx, cx, fy, cy = K
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    ys = (np.arange(H)[:, None] + offs[None]).reshape(-1)
    xs = (np.arange(W)[:, None] + offs[None]).reshape(-1)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    cam = np.stack([(gx - cx) / fx, (gy - cy) / fy, np.ones_like(gx)], -1)
    zlen = 1.0 / np.linalg.norm(cam, axis=-1)
    return torch.from_numpy(cam * zlen[..., None]).float(), torch.from_numpy(zlen).float()


def _rays_through(K: np.ndarray, cam_from_world: np.ndarray, xy: np.ndarray):
    """Rays from the camera centres through pixels ``xy`` ``(T or 1, R, 2)``; also their camera-z per unit length."""
    cam = np.concatenate([(xy - K[:2, 2]) / np.diag(K)[:2], np.ones(xy.shape[:-1] + (1,))], -1)
    z_per_len = 1.0 / np.linalg.norm(cam, axis=-1)
    dirs = np.einsum("tji,trj->tri", cam_from_world[:, :3, :3], cam * z_per_len[..., None])  # R^T d_cam
    origin = camera_centres(cam_from_world)[:, None]
    return (torch.from_numpy(origin).float(), torch.from_numpy(dirs).float(),
            torch.from_numpy(np.broadcast_to(z_per_len, dirs.shape[:2]).copy()).float())


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def render_scene(config: SceneConfig | None = None, seed: int = 0, name: str = "") -> SyntheticScene:
    """Build and render one scene.

    Args:
        config: what the scene holds (default :class:`SceneConfig`).
        seed: the scene is a deterministic function of ``(config, seed)``.
        name: a label carried in the result.

    Returns:
        :class:`SyntheticScene` with frames, tracks, visibility, 3D truth and cameras.
    """
    cfg = config or SceneConfig()
    rng = np.random.default_rng(seed)
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    objects, K, cam_from_world, n_slots = _layout(cfg, rng)
    textures = [_texture(rng, cfg.photo_fraction) for _ in range(n_slots)]
    light = rng.normal(size=3) * np.array([1, 1, 0.4]) + np.array([0, 0, 1.2])
    light = torch.from_numpy(light / np.linalg.norm(light)).float()
    sky = torch.tensor(rng.uniform(120, 230, size=3)).float()
    if cfg.movers:
        # A random stream of their own: the rest of the scene is that of movers=().
        mover_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        movers = _lay_out_movers(cfg, mover_rng, objects, K, cam_from_world, n_slots)
        textures += [_texture(mover_rng, cfg.photo_fraction) for _ in movers]
        objects = objects + movers
    atlas = np.concatenate(textures)
    atlas_t = torch.from_numpy(np.clip(atlas, 0, 255).astype(np.float32)).permute(2, 0, 1)[None]

    caster = _Caster(objects)
    with torch.inference_mode():
        ss = cfg.supersample
        depth = np.empty((T, H, W), np.float32)
        segmentation = np.empty((T, H, W), np.int16)
        frames = np.empty((T, H, W, 3), np.uint8)
        for f in range(T):
            # Depth and segmentation at pixel centres.
            t, obj, dirs, zlen = caster.cast_image(f, K, cam_from_world[f], H, W, 1)
            depth[f] = (t * zlen).numpy()
            segmentation[f] = obj.numpy()
            # Colour: supersampled, textured, Lambertian-shaded.
            if ss > 1:
                t, obj, dirs, _ = caster.cast_image(f, K, cam_from_world[f], H, W, ss)
            rgb = caster.shade(f, t, obj, dirs, atlas_t, light, sky)
            rgb = rgb.reshape(H, ss, W, ss, 3).mean((1, 3))
            frames[f] = rgb.round().clamp(0, 255).to(torch.uint8).numpy()

        # Points: sample (frame, pixel) pairs on visible surfaces, then follow them.
        query_frame, obj_id, local = _sample_points(cfg, rng, caster, K, cam_from_world, segmentation, objects)
        trajectories = _trajectories(objects, obj_id, local)
        tracks, z = project(trajectories, K, cam_from_world)
        visibility = _visible(caster, K, cam_from_world, trajectories, tracks, z, obj_id, W, H)

    dyn = np.array([o.dynamic for o in objects])
    return SyntheticScene(
        frames=frames,
        tracks=tracks.astype(np.float32),
        visibility=visibility,
        trajectories=trajectories,
        depth=depth.astype(np.float32),
        segmentation=segmentation,
        K=K,
        cam_from_world=cam_from_world,
        object_id=obj_id.astype(np.int16),
        is_dynamic=dyn[obj_id] if len(obj_id) else np.zeros(0, bool),
        object_dynamic=dyn,
        object_kind=np.array([o.kind for o in objects], np.int8),
        object_motion=np.array([o.motion for o in objects]),
        query_frame=query_frame,
        config=cfg,
        seed=seed,
        name=name,
    )


def _sample_points(cfg, rng, caster, K, cam_from_world, segmentation, objects):
    """Surface points seen at random frames: ``(N,)`` frame, ``(N,)`` object, ``(N, 3)`` local point.

    A point on a moving object is drawn uniformly from the moving objects' pixels of
    its frame; in scenes with movers, from the pixels of one of the moving objects
    in view, each as likely as the others (so a small mover gets as many points as
    a large one)."""
    N, T, H, W = cfg.num_points, cfg.num_frames, cfg.height, cfg.width
    dyn = np.array([o.dynamic for o in objects])

    @functools.lru_cache(maxsize=None)
    def pools(t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Pixels of frame ``t`` on any surface, and those on moving objects: one
        group, or in scenes with movers one group per moving object in view."""
        seg = segmentation[t].reshape(-1)
        surface = np.flatnonzero(seg >= 0)
        moving = surface[dyn[seg[surface]]]
        if not cfg.movers or not len(moving):
            return surface, [moving]
        return surface, [moving[seg[moving] == i] for i in np.unique(seg[moving])]

    frames = np.empty(0, np.int64)
    objs = np.empty(0, np.int64)
    locs = np.empty((0, 3))
    for _ in range(20):  # rays through the jittered pixel may slip off an object's edge: retry those
        need = N - len(frames)
        if need <= 0:
            break
        f = rng.integers(0, T, size=need)
        pix = np.empty(need, np.int64)
        want_dyn = rng.random(need) < cfg.dynamic_point_fraction
        for i in range(need):
            surface, groups = pools(int(f[i]))
            moving = groups[rng.integers(len(groups))] if want_dyn[i] and len(groups) > 1 else groups[0]
            pool = moving if want_dyn[i] and len(moving) else surface
            pix[i] = pool[rng.integers(len(pool))] if len(pool) else rng.integers(H * W)
        xy = np.stack([pix % W, pix // W], -1) + rng.uniform(-0.5, 0.5, size=(need, 2))
        origin, dirs, _ = _rays_through(K, cam_from_world[f], xy[:, None])
        t, obj, local = caster.cast(origin, dirs, torch.from_numpy(f))
        hit = (obj[:, 0] >= 0).numpy()
        frames = np.concatenate([frames, f[hit]])
        objs = np.concatenate([objs, obj[hit, 0].numpy()])
        locs = np.concatenate([locs, local[hit, 0].double().numpy()])
    if len(frames) < N:
        raise RuntimeError("could not sample enough surface points: the camera sees no surface")
    return frames[:N], objs[:N], locs[:N]


def _trajectories(objects: list[_Object], obj_id: np.ndarray, local: np.ndarray) -> np.ndarray:
    """World positions ``(T, N, 3)`` float64 of object-frame points. A point on a cloth is
    the material point ``(u, v)`` of its local ``(x, y)``: in every frame it lies at local
    ``(u, v, w(u, v))`` of the cloth's height field."""
    rot = np.stack([o.rotation for o in objects], 1)  # (T, O, 3, 3)
    pos = np.stack([o.position for o in objects], 1)  # (T, O, 3)
    world = np.einsum("tnij,nj->tni", rot[:, obj_id], local) + pos[:, obj_id]
    for i, o in enumerate(objects):
        on = obj_id == i
        if o.wave is None or not on.any():
            continue
        u, v = torch.from_numpy(local[on, 0]), torch.from_numpy(local[on, 1])
        w = o.wave.height(u, v, torch.from_numpy(o.wave.phase)[:, None]).numpy()  # (T, n)
        world[:, on] += (w - local[on, 2])[..., None] * o.rotation[:, None, :, 2]  # along the normal, local z
    return world


def _visible(caster, K, cam_from_world, trajectories, tracks, z, obj_id, W, H) -> np.ndarray:
    """Depth test by ray casting: the first hit through each point must be the point itself."""
    T, N = tracks.shape[:2]
    if N == 0:
        return np.zeros((T, 0), bool)
    inside = (z > 1e-3) & (tracks[..., 0] >= -0.5) & (tracks[..., 0] <= W - 0.5) \
        & (tracks[..., 1] >= -0.5) & (tracks[..., 1] <= H - 0.5)
    centres = camera_centres(cam_from_world)
    delta = trajectories - centres[:, None]
    dist = np.linalg.norm(delta, axis=-1)
    dirs = torch.from_numpy(delta / np.maximum(dist, 1e-12)[..., None]).float()
    origin = torch.from_numpy(centres[:, None]).float()
    t, obj, _ = caster.cast(origin, dirs, torch.arange(T))
    same = (obj.numpy() == obj_id[None]) & (np.abs(t.numpy() - dist) <= 1e-4 * dist + 1e-4)
    return inside & same
