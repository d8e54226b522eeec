"""Typed configs with named presets. Every checkpoint carries its ModelConfig as JSON.

    cfg = ModelConfig.from_name("tiny")                      # a preset
    cfg = ModelConfig.from_name("tiny", window=16)           # a preset with changes
    cfg = ModelConfig.from_dict(json.loads(text))            # from a checkpoint

Attention geometry (docs/architecture.md): frames are generated in chunks of `chunk` frames;
a chunk attends to itself (bidirectionally), to at most `window` earlier frames, and to the
first `sinks` frames of the session. The same geometry is used in training and in play.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..actions import ActionSpace

# the fields that say at which noise level a model writes what it draws into its cache at play (read by
# every backend; carried on by `train ... --init`, set by tools/set_play_levels.py): its levels, and the gate
PLAY_LEVELS = ("context_noise", "context_noise_idle", "context_noise_rest", "sink_noise")
PLAY_FIELDS = (*PLAY_LEVELS, "rest_after")

OVERWORLD_ACTIONS = {"keys": ["up", "down", "left", "right", "action"], "axes": [], "exclusive": False}


def _whole(owner: str, name: str, value, lo: int, hi: int) -> int:
    """An integer field in [lo, hi] (a bool, float or string is refused, naming the field)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{owner} {name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{owner} {name} must be between {lo} and {hi}, got {value}")
    return value


def _number(owner: str, name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{owner} {name} must be a number between {lo} and {hi}, got {value!r}")
    return float(value)


def _widths(owner: str, name: str, value, hi: int = 4096, lo: int = 1) -> tuple[int, ...]:
    if isinstance(value, str | dict) or not hasattr(value, "__iter__"):
        raise ValueError(f"{owner} {name} must be a list of integers, got {value!r}")
    value = list(value)
    if len(value) > 16:
        raise ValueError(f"{owner} {name}: at most 16 entries, got {len(value)}")
    return tuple(_whole(owner, f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value))


@dataclass
class AutoencoderConfig:
    latent_channels: int = 8
    # encoder widths from full resolution down; each step halves H and W, so the spatial
    # downsampling is 2 ** (len(channels) - 1)
    channels: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1  # residual blocks per resolution (the encoder, and the "mirror" decoder)
    # "mirror": the encoder's widths in reverse, nearest-neighbour upsampling then a convolution, up
    # to full resolution. "shuffle": widths `decoder_channels` from the latent's resolution up, each
    # level's residual blocks (`decoder_blocks`) then a convolution to 4x the next width and a pixel
    # shuffle; the last level draws 2x2 pixels per position, so nothing runs at full resolution,
    # where a convolution is dearest (docs/training.md, "The autoencoder").
    decoder: str = "mirror"
    decoder_channels: tuple[int, ...] = ()
    decoder_blocks: tuple[int, ...] = ()

    def __post_init__(self):
        self.channels = _widths("autoencoder", "channels", self.channels)
        self.decoder_channels = _widths("autoencoder", "decoder_channels", self.decoder_channels)
        self.decoder_blocks = _widths("autoencoder", "decoder_blocks", self.decoder_blocks, 64, lo=0)
        _whole("autoencoder", "latent_channels", self.latent_channels, 1, 1024)
        _whole("autoencoder", "blocks", self.blocks, 0, 64)
        if len(self.channels) > 8:
            raise ValueError(f"autoencoder channels: at most 8 levels, got {len(self.channels)}")
        if len(self.channels) < 2:
            raise ValueError("autoencoder channels need at least two levels (one downsampling)")
        if not isinstance(self.decoder, str) or self.decoder not in ("mirror", "shuffle"):
            raise ValueError(f"autoencoder decoder must be 'mirror' or 'shuffle', got {self.decoder!r}")
        if self.decoder == "shuffle":
            levels = len(self.channels) - 1
            if len(self.decoder_channels) != levels or len(self.decoder_blocks) != levels:
                raise ValueError(
                    f"a 'shuffle' decoder needs {levels} decoder_channels and decoder_blocks (one per "
                    f"resolution below full), got {self.decoder_channels} and {self.decoder_blocks}"
                )

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass
class ModelConfig:
    name: str = "custom"
    frame_height: int = 64
    frame_width: int = 64
    actions: dict = field(default_factory=lambda: dict(OVERWORLD_ACTIONS))
    ae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    # transformer
    patch: int = 2  # latent patch size
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    rope_theta: float = 10000.0
    # a learned table of where each token sits in the frame, added to its embedding (zeros at the
    # start). Rotary positions are relative only, so without it the network cannot tell the centre of
    # the frame (where the player is drawn) from anywhere else. False for checkpoints made before it.
    pos_embed: bool = False
    # attention geometry, in frames
    chunk: int = 1
    window: int = 8
    sinks: int = 1
    # diffusion (rectified flow)
    steps: int = 4  # few-step schedule for play
    shift: float = 3.0  # timestep shift of the schedule
    context_noise: float = 0.0  # t of the pass that writes a finished chunk into the cache
    # t of that pass for a chunk drawn with no key held (a world at rest; real start frames keep
    # context_noise); None: context_noise throughout
    context_noise_idle: float | None = None
    # t of that pass for a chunk at rest once more than `rest_after` frames in a row have had no key held (a
    # long rest: the frames drawn at rest feed on each other, and a higher level keeps the world from
    # settling into what it drew; docs/training/tiny-h100-3/rest-level/); None: context_noise_idle throughout
    context_noise_rest: float | None = None
    rest_after: int = 0
    # t at which the sinks (a reset's first frames, kept all session) are written into the cache again once
    # they have left the window and serve only as the session's anchor; None: they stay as first written
    sink_noise: float | None = None
    prediction: str = "flow"  # "flow" (eps - x0) or "x0"

    def __post_init__(self):
        if isinstance(self.ae, dict):
            self.ae = AutoencoderConfig(**self.ae)
        if not isinstance(self.ae, AutoencoderConfig):
            raise ValueError(f"model config ae must be an object, got {self.ae!r}")
        ActionSpace.from_dict(self.actions)  # validates
        # types and sizes first, so a damaged or hostile config fails here, not in a 38 GB allocation
        m = "model config"
        _whole(m, "frame_height", self.frame_height, 8, 4096)
        _whole(m, "frame_width", self.frame_width, 8, 4096)
        _whole(m, "patch", self.patch, 1, 64)
        _whole(m, "dim", self.dim, 12, 8192)
        _whole(m, "depth", self.depth, 1, 256)
        _whole(m, "heads", self.heads, 1, 256)
        _whole(m, "chunk", self.chunk, 1, 64)
        _whole(m, "window", self.window, 0, 1024)
        _whole(m, "sinks", self.sinks, 0, 64)
        _whole(m, "steps", self.steps, 1, 8)
        self.mlp_ratio = _number(m, "mlp_ratio", self.mlp_ratio, 0.25, 16.0)
        self.rope_theta = _number(m, "rope_theta", self.rope_theta, 1.0, 1e9)
        self.shift = _number(m, "shift", self.shift, 0.01, 100.0)
        self.context_noise = _number(m, "context_noise", self.context_noise, 0.0, 1.0)
        if self.context_noise_idle is not None:
            self.context_noise_idle = _number(m, "context_noise_idle", self.context_noise_idle, 0.0, 1.0)
        if self.context_noise_rest is not None:
            self.context_noise_rest = _number(m, "context_noise_rest", self.context_noise_rest, 0.0, 1.0)
        _whole(m, "rest_after", self.rest_after, 0, 1_000_000)
        if self.sink_noise is not None:
            self.sink_noise = _number(m, "sink_noise", self.sink_noise, 0.0, 1.0)
        if not isinstance(self.pos_embed, bool):
            raise ValueError(f"{m} pos_embed must be true or false, got {self.pos_embed!r}")
        if not isinstance(self.name, str) or not isinstance(self.prediction, str):
            raise ValueError(f"{m} name and prediction must be strings")
        ds = self.ae.downsample
        if self.frame_height % (ds * self.patch) or self.frame_width % (ds * self.patch):
            raise ValueError(
                f"frame size {self.frame_height}x{self.frame_width} must be divisible by "
                f"downsample x patch = {ds * self.patch}"
            )
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.head_dim % 2 or self.head_dim < 12:
            raise ValueError(f"head dim {self.head_dim} must be even and >= 12 (3-D rotary)")
        if self.chunk < 1 or self.window < 0 or self.sinks < 0:
            raise ValueError("chunk must be >= 1, window and sinks >= 0")
        if self.window % self.chunk:
            raise ValueError(f"window ({self.window}) must be a multiple of chunk ({self.chunk})")
        if not 1 <= self.steps <= 8:
            raise ValueError(f"steps must be between 1 and 8, got {self.steps}")
        if self.prediction not in ("flow", "x0"):
            raise ValueError(f"prediction must be 'flow' or 'x0', got {self.prediction!r}")
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError("context_noise must be in [0, 1)")
        if self.context_noise_idle is not None and not self.context_noise_idle < 1.0:
            raise ValueError("context_noise_idle must be in [0, 1)")
        if self.context_noise_rest is not None and not self.context_noise_rest < 1.0:
            raise ValueError("context_noise_rest must be in [0, 1)")
        if self.sink_noise is not None:
            if not self.sink_noise < 1.0:
                raise ValueError("sink_noise must be in [0, 1)")
            if self.sinks % self.chunk:  # the sinks are written again a whole chunk at a time
                raise ValueError(
                    f"sink_noise needs sinks ({self.sinks}) to be a multiple of chunk ({self.chunk})"
                )

    # -- derived -----------------------------------------------------------------------------
    @property
    def action_space(self) -> ActionSpace:
        return ActionSpace.from_dict(self.actions)

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def latent_height(self) -> int:
        return self.frame_height // self.ae.downsample

    @property
    def latent_width(self) -> int:
        return self.frame_width // self.ae.downsample

    @property
    def grid(self) -> tuple[int, int]:
        """Token rows and columns per frame."""
        return self.latent_height // self.patch, self.latent_width // self.patch

    @property
    def tokens_per_frame(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def rope_dims(self) -> tuple[int, int, int]:
        """How the head dim is split between time, rows and columns (each even)."""
        spatial = 2 * (self.head_dim // 6)
        spatial -= spatial % 2
        return self.head_dim - 2 * spatial, spatial, spatial

    # -- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ae"]["channels"] = list(self.ae.channels)
        d["ae"]["decoder_channels"] = list(self.ae.decoder_channels)
        d["ae"]["decoder_blocks"] = list(self.ae.decoder_blocks)
        for name in ("context_noise_idle", "context_noise_rest", "sink_noise"):  # unset: read as before them
            if d[name] is None:
                del d[name]
        if "context_noise_rest" not in d:  # its gate means nothing without it
            del d["rest_after"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        if not isinstance(d, dict):
            raise ValueError("model config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(map(repr, unknown))}")
        d = dict(d)
        if "ae" in d:
            if not isinstance(d["ae"], dict):
                raise ValueError(f"model config ae must be an object, got {d['ae']!r}")
            ae = dict(d["ae"])
            ae_known = {f.name for f in dataclasses.fields(AutoencoderConfig)}
            bad = sorted(set(ae) - ae_known)
            if bad:
                raise ValueError(f"unknown autoencoder config field(s): {', '.join(map(repr, bad))}")
            d["ae"] = AutoencoderConfig(**ae)
        try:
            return cls(**d)
        except TypeError as e:
            raise ValueError(f"bad model config: {e}") from None

    @classmethod
    def from_name(cls, name: str, **changes) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        d = dict(PRESETS[name], name=name)
        d["ae"] = AutoencoderConfig(**d["ae"])
        d.update(changes)
        return cls(**d)


SHAPE_FIELDS = {"dim": int, "depth": int, "heads": int, "mlp_ratio": float}  # a transformer's shape
STUDENT_FIELDS = {**SHAPE_FIELDS, "steps": int}  # a student's: its shape and its denoising steps


def parse_shape(text: str | None, option: str = "--teacher-shape", fields: dict = SHAPE_FIELDS) -> dict:
    """ "dim=128,heads=2" -> {"dim": 128, "heads": 2}: changes to a transformer's shape (dim, depth,
    heads, mlp_ratio; `fields`), names and numbers checked; {} for None or ""."""
    out: dict = {}
    for part in filter(None, (text or "").replace(" ", "").split(",")):
        name, _, value = part.partition("=")
        kind = fields.get(name)
        try:
            out[name] = kind(value) if kind is not None else None
        except ValueError:
            out[name] = None
        if out[name] is None:
            raise ValueError(
                f"{option}: bad entry {part!r}; expected NAME=VALUE, NAME one of {', '.join(fields)}"
            )
    return out


def reshaped(cfg: ModelConfig, changes: dict, option: str = "--student-shape") -> ModelConfig:
    """`cfg` with its transformer's shape changed (everything else, the autoencoder, the attention
    geometry and the schedule, is shared); a shape the model cannot take is refused naming `option`."""
    try:
        return dataclasses.replace(cfg, **changes)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from None


def shape_of(cfg: ModelConfig, fields: dict = SHAPE_FIELDS) -> dict:
    return {k: getattr(cfg, k) for k in fields}


def say_shape(cfg: ModelConfig, fields: dict = SHAPE_FIELDS) -> str:
    return ",".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in shape_of(cfg, fields).items()
    )


PRESETS: dict[str, dict] = {
    # The CPU default: sized by measurement so a whole frame (then 4 denoise passes, the cache
    # pass, decode) runs at >= 30 fps on 2 cores at 64x64 (docs/benchmarks/session-cpu.md).
    # At these sizes the CPU is FLOP-bound (~190 GFLOP/s in the linears): 6 layers took
    # 33 ms a frame, 5 take 28 ms.
    "tiny": dict(
        frame_height=64,
        frame_width=64,
        # 16 latent channels and a pixel-shuffle decoder: 32.9 dB held-out after 2 500 CPU steps where
        # the mirror decoder with 8 channels gave 25 (docs/training.md, "The autoencoder"), and a
        # cheaper decode (0.72x)
        ae=dict(
            latent_channels=16,
            channels=(16, 48, 128),
            decoder="shuffle",
            decoder_channels=(128, 32),
            decoder_blocks=(1, 1),
        ),
        patch=2,
        dim=192,
        depth=5,
        heads=3,
        chunk=1,
        window=8,
        sinks=1,
        # where each token is: the game draws its player at the frame's centre, which rotary positions
        # alone cannot tell (docs/training.md, "Where the player is"); the game presets have it, old
        # checkpoints load without it
        pos_embed=True,
        # two denoising steps, not the paper's four: at CPU scale the 2-step ODE student held the world
        # for 300 frames where the 4-step one drew lattices, with two seeds each (docs/training.md,
        # "Fewer steps, and Self Forcing's rollout"); three passes a frame instead of five
        steps=2,
    ),
    # GPU sizes.
    "small": dict(
        frame_height=64,
        frame_width=64,
        ae=dict(latent_channels=8, channels=(32, 64, 128)),
        patch=2,
        dim=384,
        depth=12,
        heads=6,
        chunk=1,
        window=16,
        sinks=1,
        pos_embed=True,
        steps=2,
    ),
    "base": dict(
        frame_height=128,
        frame_width=128,
        ae=dict(latent_channels=16, channels=(32, 64, 128, 256), blocks=2),
        patch=1,
        dim=768,
        depth=16,
        heads=12,
        chunk=1,
        window=16,
        sinks=1,
        pos_embed=True,
        steps=2,
    ),
    # The Self-Forcing (Wan 2.1 1.3B) shape, for benchmarks with random weights: 30 layers,
    # width 1536, 12 heads; 480x832 frames -> 60x104 latents -> 30x52 = 1560 tokens per latent
    # frame; chunks of 3 latent frames; each chunk attends to 21 latent frames (18 cached + its 3).
    "sf-1.3b": dict(
        frame_height=480,
        frame_width=832,
        ae=dict(latent_channels=16, channels=(32, 64, 128, 256)),
        patch=2,
        dim=1536,
        depth=30,
        heads=12,
        chunk=3,
        window=18,
        sinks=0,
        shift=5.0,
    ),
}
