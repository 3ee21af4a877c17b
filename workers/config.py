"""Every setting of a job in one place: the settings, which of them decide the faces, how people name them,
and the one step that checks them.

Each field is declared with `setting(...)`: its default, the parser that checks a value (text from the
command line or a YAML spec, or a Python value from the API or a stored `_job.json`), its option name
(the flag `--name-with-dashes`, the YAML key and the API keyword `name`) and whether it decides which faces
come out (`faces=True`: the job's identity, `job_identity`, is made of those). `OPTIONS` is that table;
`resolve` is the one step from options to a checked `JobConfig`, so the CLI, the YAML specs, `--resume` and
the API refuse the same bad value with the same line. Imports nothing else of the project but its errors.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from facesweep.workers.errors import TRANSIENT_KINDS, ErrorKind, UserError

DEFAULT_MODEL = "retinaface-mnet025"
PIECE_BYTES = 64 * 1024 * 1024
"""Bytes of a container per piece (one shard): about 600 WIDER-sized JPEGs, read in one ranged GET."""
STARTUP_TIMEOUT = 300.0
ROWS_PER_FILE = 100_000
METHODS = ("blur", "mosaic", "solid")
PIXEL_BUDGET_PER_CPU = 512
"""MB of decoded pixels an actor holds at once per CPU, unless --pixel-budget says (docs/PERFORMANCE.md)."""
MAX_SIDE = 1024
"""`--resolution native` without `--max-side`: the longest side an image keeps (docs/ACCURACY.md)."""
PIECE_SECONDS = 30.0
"""Seconds of a video per piece (one shard): 900 frames at 30 fps, all decoded, some detected."""


class ConfigError(UserError, ValueError):
    """A setting that cannot be used; the message names the option and what it takes, in one line."""


# Parsers: a value as text (flags, YAML) or as Python (API, _job.json) -> the checked value, or a
# ValueError saying what is wrong without the option's name (the caller adds it).


def text(value: Any) -> str:
    """A string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a string, got {value!r}")
    return value


def integer(value: Any) -> int:
    """An integer."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None


def number(value: Any) -> float:
    """A number."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def positive_int(value: Any) -> int:
    """An integer of at least 1."""
    parsed = integer(value)
    if parsed < 1:
        raise ValueError(f"must be at least 1, got {parsed}")
    return parsed


def positive_float(value: Any) -> float:
    """A number greater than 0."""
    parsed = number(value)
    if parsed <= 0:
        raise ValueError(f"must be greater than 0, got {parsed}")
    return parsed


def fraction(value: Any) -> float:
    """A number between 0 and 1."""
    parsed = number(value)
    if not 0 <= parsed <= 1:
        raise ValueError(f"must be between 0 and 1, got {parsed}")
    return parsed


def switch(value: Any) -> bool:
    """True or false."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def size(value: Any) -> tuple[int, int]:
    """A size WIDTHxHEIGHT (one number: a square)."""
    if isinstance(value, list | tuple) and len(value) == 2:
        parsed = (integer(value[0]), integer(value[1]))
    else:
        width, _, height = str(value).lower().partition("x")
        try:
            parsed = (int(width), int(height or width))
        except ValueError:
            raise ValueError(f"expected WIDTHxHEIGHT, got {value!r}") from None
    if min(parsed) < 1:
        raise ValueError(f"expected a positive WIDTHxHEIGHT, got {value!r}")
    return parsed


def _numbers(value: Any, example: str) -> tuple[float, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        return tuple(number(v) for v in items)
    except ValueError:
        raise ValueError(f"expected numbers like {example}, got {value!r}") from None


def triple(value: Any) -> tuple[float, float, float]:
    """Three comma-separated numbers."""
    values = _numbers(value, "104,117,123")
    if len(values) != 3:
        raise ValueError(f"expected three comma-separated numbers, got {value!r}")
    return values[0], values[1], values[2]


def scales(value: Any) -> tuple[float, ...]:
    """Comma-separated numbers greater than 0."""
    values = _numbers(value, "0.5,1,2")
    if not values or min(values) <= 0:
        raise ValueError(f"scales must be greater than 0, got {value!r}")
    return values


def choice(*choices: str) -> Callable[[Any], str]:
    """One of `choices`."""

    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    parse.__doc__ = f"one of {', '.join(choices)}"
    return parse


def error_kinds(value: Any) -> tuple[str, ...]:
    """Error kinds, comma-separated (true: the transient ones)."""
    if isinstance(value, bool):
        return TRANSIENT_KINDS if value else ()
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    kinds = tuple(dict.fromkeys(str(item).strip() for item in items))
    valid = [kind.value for kind in ErrorKind]
    if not kinds or not set(kinds) <= set(valid):
        raise ValueError(f"expected error kinds among {', '.join(valid)}, got {value!r}")
    return kinds


def setting(
    default: Any = dataclasses.MISSING, *, parse: Callable[[Any], Any], faces: bool, **kwargs: Any
) -> Any:
    """A field of the job's settings: its parser, and whether it decides the faces (part of the identity).

    A None default means "not given" (the model's or format's value); None is never parsed."""
    return field(default=default, metadata={"parse": parse, "faces": faces}, **kwargs)


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are found in an image: the model and every decoding and preprocessing choice. None: the
    model's or format's value. `model` itself is no part of the identity (its checksum is)."""

    model: str = setting(parse=text, faces=False)
    device: str = setting("CPU", parse=text, faces=True)
    threads: int = 1  # not an option: an actor's CPUs (--cpus-per-actor), or FaceDetector's `threads`
    score_threshold: float = setting(0.5, parse=fraction, faces=True)
    nms_threshold: float | None = setting(None, parse=fraction, faces=True)
    format: str | None = setting(None, parse=text, faces=True)  # None: detected from the model's outputs
    resize: Literal["stretch", "letterbox"] | None = setting(
        None, parse=choice("stretch", "letterbox"), faces=True
    )
    input_size: tuple[int, int] | None = setting(None, parse=size, faces=True)  # (width, height)
    color: Literal["BGR", "RGB"] | None = setting(None, parse=choice("BGR", "RGB"), faces=True)
    mean: tuple[float, float, float] | None = setting(None, parse=triple, faces=True)
    scale: tuple[float, float, float] | None = setting(None, parse=triple, faces=True)
    face_label: int | None = setting(None, parse=integer, faces=True)
    batch: int = setting(1, parse=positive_int, faces=True)
    precision: str | None = setting(None, parse=choice("f32", "bf16", "f16"), faces=True)
    model_sha256: str | None = setting(None, parse=text, faces=False)  # refuse other bytes
    scales: tuple[float, ...] = setting((1.0,), parse=scales, faces=True)  # test-time pyramid (views)
    tile: bool = setting(False, parse=switch, faces=True)  # also native-resolution tiles of large images
    second_look: float | None = setting(None, parse=positive_float, faces=True)  # this scale where it pays
    reduced_decode: bool = setting(True, parse=switch, faces=True)  # JPEGs at 1/2..1/8 where views allow
    resolution: Literal["fixed", "native"] = setting(
        "fixed", parse=choice("fixed", "native"), faces=True
    )  # native: each image near its own size (any-size models), else in native-resolution tiles
    max_side: int | None = setting(None, parse=positive_int, faces=True)  # native: None = MAX_SIDE

    def __post_init__(self) -> None:
        if self.second_look is not None and tuple(self.scales) != (1.0,):
            raise ConfigError(
                f"--second-look {self.second_look:g} and --scales {','.join(f'{s:g}' for s in self.scales)}: "
                "give one (--second-look adds its scale only where the first pass says it pays)"
            )
        if self.second_look == 1:
            raise ConfigError("--second-look 1 is the first pass's own scale: give another, e.g. 2")

    @property
    def native_max_side(self) -> int | None:
        """The longest side an image keeps at native resolution; None at a fixed one."""
        return (self.max_side or MAX_SIDE) if self.resolution == "native" else None

    @property
    def holds_gpu(self) -> bool:
        """Whether the (checked) device compiles on a GPU for certain, so an actor must hold one."""
        return self.device.startswith("GPU")


@dataclass(frozen=True)
class ContainerSettings:
    """How containers and videos are cut and read; `piece_bytes` and `piece_seconds` decide the pieces'
    names, so a job keeps them. In the identity only when not the default (records older than containers
    and videos have no such keys)."""

    piece_bytes: int = setting(PIECE_BYTES, parse=positive_int, faces=True)
    image_column: str | None = setting(None, parse=text, faces=True)  # Parquet: None = the one bytes column
    id_column: str | None = setting(None, parse=text, faces=True)  # Parquet: carried into the output as `key`
    piece_seconds: float = setting(PIECE_SECONDS, parse=positive_float, faces=True)
    fps: float | None = setting(None, parse=positive_float, faces=True)
    """Video frames detected a second; None: 1, or every frame with --anonymize (the copy's faces)."""
    every_frame: bool = setting(False, parse=switch, faces=True)
    keyframes: bool = setting(False, parse=switch, faces=True)

    def frame_rate(self, anonymizing: bool) -> float | None:
        """Frames a second to detect (None: every frame, or every keyframe with `keyframes`)."""
        if self.every_frame or self.keyframes:
            return None
        return self.fps if self.fps is not None else (None if anonymizing else 1.0)


@dataclass(frozen=True)
class Tuning:
    """Throughput and memory levers: how fast a job runs and what an actor holds, never which faces it
    finds (but see `pixel_budget`), so a re-run may change them. Each default is the measured winner on a
    2-CPU machine (`make levers`, docs/LEVERS.md)."""

    requests_per_stream: int = setting(2, parse=positive_int, faces=False)
    """Inference requests in flight per device stream: while a finished request's outputs are decoded,
    another is already queued, so no stream waits for Python (1 is slower; 4 was no faster)."""
    shards_at_once: int = setting(2, parse=positive_int, faces=False)
    """Shards an actor works on at once (its Ray max_concurrency; the driver queues as many per actor)."""
    fetch_threads: int = setting(16, parse=positive_int, faces=False)
    """Threads per actor fetching, decoding and preparing images (mostly waiting on the store)."""
    cpu_pinning: bool = setting(False, parse=switch, faces=False)
    """OpenVINO's ENABLE_CPU_PINNING: off, since an actor shares its node's cores with its fetch threads."""
    pixel_budget: int | None = setting(None, parse=positive_int, faces=False)
    """MB of decoded pixels an actor holds at once (None: PIXEL_BUDGET_PER_CPU per CPU; see
    workers/job/budget.py). It changes a photo's faces only when the photo does not fit at the job's own
    scale, and then the photo's row says the scale it was decoded at (`decode_scale`): a re-run may change
    it as a node's memory allows."""
    stuck_seconds: float = setting(120.0, parse=positive_float, faces=False)
    """A call running this long, and `stuck_factor` times as long as its shards usually take, is stuck:
    its actor is restarted and its shards redone elsewhere (workers/job/dispatch.py)."""
    stuck_factor: float = setting(8.0, parse=positive_float, faces=False)
    """How many times the usual time of its shards a call may take before it is stuck."""


@dataclass(frozen=True)
class AnonymizeSettings:
    """`--anonymize DEST`: where the copies go and how faces are hidden."""

    anonymize: str = setting(parse=text, faces=True)  # DEST: a folder or a store's prefix
    anonymize_method: Literal["blur", "mosaic", "solid"] = setting("blur", parse=choice(*METHODS), faces=True)
    anonymize_mask_scale: float = setting(1.3, parse=positive_float, faces=True)
    anonymize_threshold: float = setting(0.2, parse=fraction, faces=True)
    anonymize_hold: float = setting(0.5, parse=number, faces=True)
    """A video's face stays hidden this many seconds before its first and after its last detection (at
    least until the next sampled frame), so a frame the detector missed does not show it."""
    drop_audio: bool = setting(False, parse=switch, faces=True)  # a video's copy without audio, subtitles
    root: str | None = None
    """INPUT when it is a folder or prefix (copies' keys are relative to it), else None: derived by the
    driver."""


@dataclass(frozen=True)
class CropSettings:
    """`--crops`: the crops' size and, for models without landmarks, their margin."""

    crop_size: int = setting(112, parse=positive_int, faces=True)
    crop_margin: float = setting(0.25, parse=number, faces=True)  # a square's side: longer side x (1 + m)


@dataclass(frozen=True)
class JobConfig:
    """One job: what to read, where to write, which detector, which products, and how many actors."""

    input: str = setting(parse=text, faces=True)
    output: str = setting(parse=text, faces=False)
    detector: DetectorSettings = field(default_factory=lambda: DetectorSettings(DEFAULT_MODEL))
    actors: int | None = setting(None, parse=positive_int, faces=False)  # None: as the cluster's CPUs allow
    cpus_per_actor: float = setting(2.0, parse=positive_float, faces=False)
    shard_size: int = setting(64, parse=positive_int, faces=False)
    include: str | None = setting(None, parse=text, faces=True)
    ray_address: str | None = setting(None, parse=text, faces=False)  # None: a local Ray (or RAY_ADDRESS)
    rows_per_file: int = setting(ROWS_PER_FILE, parse=positive_int, faces=False)  # images per part file
    startup_timeout: float = setting(STARTUP_TIMEOUT, parse=positive_float, faces=False)
    reprocess_changed: bool = setting(False, parse=switch, faces=False)  # redo changed images
    retry_errors: tuple[str, ...] | None = setting(None, parse=error_kinds, faces=False)  # redo these once
    max_error_rate: float = setting(0.1, parse=fraction, faces=False)  # more error rows: the job fails
    containers: ContainerSettings = field(default_factory=ContainerSettings)
    tuning: Tuning = field(default_factory=Tuning)
    anonymizer: AnonymizeSettings | None = None  # --anonymize DEST: anonymized copies of the images
    crops: CropSettings | None = None  # --crops: each face's aligned crop in OUTPUT/_crops/


GROUPS: dict[str, type] = {
    "detector": DetectorSettings,
    "containers": ContainerSettings,
    "tuning": Tuning,
    "anonymizer": AnonymizeSettings,
    "crops": CropSettings,
}
"""JobConfig's nested settings by field name; `anonymizer` and `crops` exist only when switched on."""
VIDEO_COPY_SETTINGS = ("anonymize_hold", "drop_audio")
"""Settings of --anonymize that only videos use: in the identity only when not the default."""
SWITCHES = {"anonymizer": "anonymize", "crops": "crops"}
"""The option that switches an optional group on: `anonymize=DEST`, `crops=True`."""
SWITCH_HINTS = {
    "anonymize": "--anonymize DEST, the folder or store prefix for the copies",
    "crops": "--crops",
}


@dataclass(frozen=True)
class Option:
    """One setting as people give it: the flag `--{name with dashes}`, the YAML key and API keyword `name`."""

    name: str
    group: str | None  # JobConfig's field holding it (None: JobConfig's own field)
    parse: Callable[[Any], Any]
    faces: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """The checked value (None stays None: not given); a ConfigError naming the flag."""
        if value is None:
            return None
        try:
            return self.parse(value)
        except ValueError as error:
            raise ConfigError(f"{self.flag}: {error}") from None


def _options() -> dict[str, Option]:
    table = {
        f.name: Option(f.name, None, f.metadata["parse"], f.metadata["faces"]) for f in _settings(JobConfig)
    }
    for group, kind in GROUPS.items():
        table |= {
            f.name: Option(f.name, group, f.metadata["parse"], f.metadata["faces"]) for f in _settings(kind)
        }
    table["crops"] = Option("crops", "crops", switch, True)
    return table


def _settings(kind: type) -> Iterator[dataclasses.Field]:
    return (f for f in fields(kind) if "parse" in f.metadata)


OPTIONS: dict[str, Option] = _options()
"""Every option by name: the flag table the CLI, YAML specs, `--resume` and the API share."""


def resolve(input: Any, output: Any, model: Any = DEFAULT_MODEL, **options: Any) -> JobConfig:
    """The checked job of `facesweep run INPUT OUTPUT --model MODEL --OPTION VALUE...`: every value
    through its option's parser, a group's options without its switch refused, the crops' size checked.
    A ConfigError for the first bad value, a TypeError for an option that does not exist. (What needs
    the device, the model or the store to derive, the driver's `_prepare` derives.)"""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:  # a keyword the API does not take, as Python says it
        raise TypeError(f"unknown job options: {', '.join(unknown)}")
    checked = {name: OPTIONS[name].check(value) for name, value in {**options, "model": model}.items()}
    input, output = OPTIONS["input"].check(input), OPTIONS["output"].check(output)
    given = {name: value for name, value in checked.items() if value is not None}
    groups: dict[str, Any] = {}
    for group, kind in GROUPS.items():
        values = {name: value for name, value in given.items() if OPTIONS[name].group == group}
        switch_name = SWITCHES.get(group)
        if switch_name is None:
            groups[group] = kind(**values)
            continue
        on = values.pop("crops", None) if group == "crops" else values.get(switch_name)
        if not on:
            if values:
                names = ", ".join(OPTIONS[name].flag for name in sorted(values))
                raise ConfigError(f"{names} need {SWITCH_HINTS[switch_name]}")
            groups[group] = None
            continue
        groups[group] = kind(**values)
    if groups["crops"] is not None:
        _check_crops(groups["crops"])
    _check_frames(groups["containers"])
    own = {name: value for name, value in given.items() if OPTIONS[name].group is None}
    own.pop("input", None), own.pop("output", None)
    return JobConfig(input, output, **groups, **own)


def _check_crops(crops: CropSettings) -> None:
    if crops.crop_size % 112 and crops.crop_size % 128:
        raise ConfigError(f"--crop-size {crops.crop_size}: use a multiple of 112 or 128 (ArcFace's)")
    if crops.crop_margin < 0:
        raise ConfigError(f"--crop-margin {crops.crop_margin:g}: use 0 or more")


def _check_frames(containers: ContainerSettings) -> None:
    chosen = [name for name in ("fps", "every_frame", "keyframes") if getattr(containers, name)]
    if len(chosen) > 1:
        flags = " and ".join(OPTIONS[name].flag for name in chosen)
        raise ConfigError(f"{flags}: choose one way to sample a video's frames")


def flatten(config: JobConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The options that make `config` (a JobConfig, or one as `_job.json` stores it) again through
    `resolve`: the inverse of the table, for `--resume`."""
    stored = dataclasses.asdict(config) if isinstance(config, JobConfig) else dict(config)
    values: dict[str, Any] = {}
    for name, option in OPTIONS.items():
        group = stored if option.group is None else stored.get(option.group)
        if name == "crops":
            values[name] = bool(group)
        elif isinstance(group, Mapping) and name in group:
            value = group[name]
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def job_identity(config: JobConfig, checksum: str) -> dict[str, Any]:
    """What decides which faces the job writes (the `faces=True` settings; the model by its checksum):
    a re-run into the same OUTPUT must match it."""
    identity: dict[str, Any] = {"input": config.input, "include": config.include, "model_sha256": checksum}
    identity |= _detector_faces(config.detector)
    identity |= _unless_default(config.containers, _faces(config.containers))
    if config.anonymizer is not None:  # the copies are part of what the job writes
        copies = _faces(config.anonymizer)
        identity |= {k: v for k, v in copies.items() if k not in VIDEO_COPY_SETTINGS}
        identity |= _unless_default(config.anonymizer, VIDEO_COPY_SETTINGS)
    if config.crops is not None:  # so are the crops
        identity |= {"crops": True, **_faces(config.crops)}
    return json.loads(json.dumps(identity))  # as _job.json stores it (tuples become lists)


def _detector_faces(detector: DetectorSettings) -> dict[str, Any]:
    """The detector's part of the identity; `resolution` and `max_side` (the cap in force) only at native
    resolution, since a record that predates them ran at a fixed one; `second_look` only when given."""
    faces = _faces(detector)
    del faces["resolution"], faces["max_side"]
    if faces["second_look"] is None:  # as records that predate it
        del faces["second_look"]
    if detector.native_max_side is not None:
        faces |= {"resolution": detector.resolution, "max_side": detector.native_max_side}
    return faces


def _unless_default(settings: Any, names: Iterable[str]) -> dict[str, Any]:
    """`settings`' values of `names` that differ from their defaults; the others are taken out of the
    identity, so records written before these settings existed still match."""
    defaults = {f.name: f.default for f in fields(settings)}
    return {name: getattr(settings, name) for name in names if getattr(settings, name) != defaults[name]}


def _faces(settings: Any) -> dict[str, Any]:
    return {f.name: getattr(settings, f.name) for f in _settings(type(settings)) if f.metadata["faces"]}
