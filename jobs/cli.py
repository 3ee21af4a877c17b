"""`facesweep` command line: parses flags into one JobConfig and runs it."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from facesweep.error_rows import COLUMNS, error_rows
from facesweep.export import DEFAULT_FILES, export
from facesweep.progress import progress_for
from facesweep.report import write_report
from facesweep.specs import run_arguments
from facesweep.workers.config import (
    DEFAULT_MODEL,
    MAX_SIDE,
    METHODS,
    OPTIONS,
    PIECE_BYTES,
    PIECE_SECONDS,
    PIXEL_BUDGET_PER_CPU,
    ROWS_PER_FILE,
    STARTUP_TIMEOUT,
    JobConfig,
    Tuning,
    fraction,
    positive_float,
    positive_int,
    resolve,
    scales,
    size,
    triple,
)
from facesweep.workers.errors import TRANSIENT_KINDS, ErrorKind, JobFailedError, JobInterrupted, UserError
from facesweep.workers.evaluation.evaluate import check_pairing, evaluate, format_report
from facesweep.workers.inputs.listing import list_images
from facesweep.workers.inputs.videos import VIDEO_SUFFIXES
from facesweep.workers.job.preparation import DryRun, dry_run
from facesweep.workers.job.progress import JobProgress, Retried
from facesweep.workers.model.catalog import BUILTIN_MODELS
from facesweep.workers.model.formats import FORMATS
from facesweep.workers.output.writer import ShardCounts
from facesweep.workers.wording import plural

DEFAULT_REPORT = "facesweep-report"


def _flag(parse: Callable[[Any], Any]) -> Callable[[str], Any]:
    """A config parser as argparse's `type=`: its reason becomes argparse's one line for the flag."""

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parsed.__name__, parsed.__doc__ = parse.__name__, parse.__doc__
    return parsed


def _choice(option: str) -> Callable[[str], Any]:
    """The option's own choice parser, so a bad choice reads as the API and a spec say it."""
    return _flag(OPTIONS[option].parse)


_positive_int, _positive_float = _flag(positive_int), _flag(positive_float)
_fraction, _size, _triple, _scales = _flag(fraction), _flag(size), _flag(triple), _flag(scales)


class _Parser(argparse.ArgumentParser):
    """argparse with facesweep's error contract: one line, `facesweep: error: ...`, exit 1; abbreviated
    flags (`--scor` for `--score-threshold`) are refused, not guessed."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("facesweep").strip()
        hint = self._did_you_mean(message)
        print(f"facesweep: error: {f'{command}: ' if command else ''}{message}{hint}", file=sys.stderr)
        sys.exit(1)

    def _did_you_mean(self, message: str) -> str:
        """`, did you mean '--score-threshold'?` for a misspelt flag among `unrecognized arguments`."""
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = {
            flag for parser in self._parsers() for action in parser._actions for flag in action.option_strings
        }
        for word in message.split()[2:]:
            close = difflib.get_close_matches(word.split("=")[0], flags, n=1) if word.startswith("--") else []
            if close:
                return f" (did you mean {close[0]}?)"
        return ""

    def _parsers(self) -> list[argparse.ArgumentParser]:
        """This parser and its subcommands' parsers."""
        subparsers = (a for a in self._actions if isinstance(a, argparse._SubParsersAction))
        return [self, *(p for action in subparsers for p in action.choices.values())]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="facesweep", description="Batch face detection at cluster scale.")
    parser.add_argument("--version", action="version", version=f"facesweep {version('facesweep')}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="detect faces in every image of INPUT, write Parquet to OUTPUT")
    run.add_argument(
        "input",
        nargs="?",
        metavar="INPUT",
        help="s3://bucket/prefix, az://container/prefix, a local directory, or a manifest "
        "(.txt/.lst: one URI per line; .parquet: a `uri` column) (or from --config)",
    )
    run.add_argument(
        "output",
        nargs="?",
        metavar="OUTPUT",
        help="s3://bucket/prefix, az://container/prefix or a local directory (or from --config)",
    )
    run.add_argument(
        "--resume",
        metavar="OUTPUT",
        help="go on with the job that wrote OUTPUT, with its settings (from OUTPUT/_job.json); flags given "
        "beside it change those that do not decide the faces (--actors, --ray-address, ...)",
    )
    run.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML job spec (jobs/*.yaml): keys are these options' names with underscores, flags override",
    )
    model = run.add_argument_group("model and decoding")
    model.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"built-in ({', '.join(BUILTIN_MODELS)}), or a path / s3:// URI to an OpenVINO .xml "
        f"(with .bin) or .onnx (default: {DEFAULT_MODEL})",
    )
    model.add_argument(
        "--score-threshold", type=_fraction, default=0.5, help="keep faces scoring above (0.5)"
    )
    model.add_argument("--nms-threshold", type=_fraction, help="NMS IoU threshold (default: the format's)")
    model.add_argument("--format", choices=sorted(FORMATS), help="output format (default: from the outputs)")
    model.add_argument("--face-label", type=int, help="class id of faces in multi-class outputs")
    pre = run.add_argument_group("preprocessing (default: the known model's, else its format's)")
    pre.add_argument(
        "--resize",
        type=_choice("resize"),
        metavar="{stretch,letterbox}",
        help="plain resize or aspect-keeping",
    )
    pre.add_argument("--input-size", type=_size, metavar="WxH", help="network input (default: the IR's)")
    pre.add_argument(
        "--color", type=_choice("color"), metavar="{BGR,RGB}", help="channel order the network expects"
    )
    pre.add_argument("--mean", type=_triple, metavar="A,B,C", help="subtracted per channel (network order)")
    pre.add_argument("--scale", type=_triple, metavar="A,B,C", help="divides per channel after the mean")
    pre.add_argument(
        "--full-decode",
        dest="reduced_decode",
        action="store_false",
        help="always decode JPEGs at full size (default: at 1/2, 1/4 or 1/8 in libjpeg's DCT when every "
        "view of the image is at most that large: several times less decoding, the same faces)",
    )
    views = run.add_argument_group("multi-scale and tiling (accuracy for speed: docs/ACCURACY.md)")
    views.add_argument(
        "--scales",
        type=_scales,
        default=(1.0,),
        metavar="S,S,...",
        help="test-time pyramid: run each image at each scale (1 = the normal preprocessing; 2 = the image "
        "reaches the network twice as large, in tiles if it exceeds a fixed input) and merge by NMS (1); "
        "--second-look adds a scale only where it pays",
    )
    views.add_argument(
        "--second-look",
        type=_positive_float,
        metavar="S",
        help="a second view at scale S (as --scales 1,S, merged the same way) only for images whose first "
        "pass is unsure (3 or more faces scoring 0.1-0.5): --scales 1,2's WIDER AP for 0.71-0.85x its CPU "
        "(docs/ACCURACY-notes.md); not with --scales",
    )
    views.add_argument(
        "--tile",
        action="store_true",
        help="also run images larger than the network input as overlapping native-resolution tiles, "
        "merged by NMS with the whole image (small faces in big photos; fixed-input models)",
    )
    views.add_argument(
        "--resolution",
        type=_choice("resolution"),
        metavar="{fixed,native}",
        help="fixed: the network input (default); native: each image near its own size, for a model that "
        "takes any size (else as --tile), downscaled to --max-side",
    )
    views.add_argument(
        "--max-side",
        type=_positive_int,
        metavar="N",
        help=f"native resolution: the longest side an image keeps, in pixels ({MAX_SIDE})",
    )
    res = run.add_argument_group("resources")
    res.add_argument("--actors", type=_positive_int, help="actors (default: cluster CPUs / cpus-per-actor)")
    res.add_argument(
        "--cpus-per-actor", type=_positive_float, default=2.0, help="CPUs (threads) per actor (2)"
    )
    res.add_argument(
        "--device",
        default="CPU",
        help="OpenVINO device: CPU, GPU or GPU.N (each actor holds one of the Ray cluster's GPUs), AUTO, "
        "AUTO:GPU,CPU (CPU)",
    )
    res.add_argument(
        "--startup-timeout",
        type=_positive_float,
        default=STARTUP_TIMEOUT,
        metavar="S",
        help="seconds to wait for a cluster that can grow to fit the actors, and for them to be ready "
        f"({STARTUP_TIMEOUT:g}); a local Ray that cannot fit them is refused at once",
    )
    res.add_argument(
        "--stuck-seconds",
        type=_positive_float,
        default=Tuning.stuck_seconds,
        metavar="S",
        help=f"an actor call is never judged stuck before S seconds ({Tuning.stuck_seconds:g})",
    )
    res.add_argument(
        "--stuck-factor",
        type=_positive_float,
        default=Tuning.stuck_factor,
        metavar="K",
        help="a call taking K times as long as its shards usually do is stuck: its actor is restarted, "
        f"its shards redone elsewhere ({Tuning.stuck_factor:g})",
    )
    res.add_argument(
        "--pixel-budget",
        type=_positive_int,
        metavar="MB",
        help="decoded pixels an actor holds at once, in MB; a photo too large for it at full size is "
        f"decoded at 1/2, 1/4 or 1/8, its row says so (default: {PIXEL_BUDGET_PER_CPU} per actor CPU)",
    )
    res.add_argument("--batch", type=_positive_int, default=1, help="images per inference request (1)")
    res.add_argument(
        "--precision",
        type=_choice("precision"),
        metavar="{f32,bf16,f16}",
        help="inference precision (device's)",
    )
    res.add_argument(
        "--shard-size", type=_positive_int, default=64, help="images per shard: per actor call (64)"
    )
    res.add_argument(
        "--rows-per-file",
        type=_positive_int,
        default=ROWS_PER_FILE,
        help=f"images per output Parquet file; committed shards are compacted into them ({ROWS_PER_FILE})",
    )
    tuning = run.add_argument_group("throughput levers (never change the faces; measured in docs/LEVERS.md)")
    for flag, what in (
        ("--requests-per-stream", "inference requests in flight per device stream"),
        ("--shards-at-once", "shards each actor works on at once"),
        ("--fetch-threads", "threads per actor fetching and decoding images"),
    ):
        default = getattr(Tuning, flag[2:].replace("-", "_"))
        described = f"{what} ({default})"
        tuning.add_argument(flag, type=_positive_int, default=default, metavar="N", help=described)
    tuning.add_argument(
        "--cpu-pinning", action="store_true", help="pin OpenVINO's threads to cores (off: they share them)"
    )
    hide = run.add_argument_group("anonymized copies (each image, its faces hidden, under the same key)")
    hide.add_argument("--anonymize", metavar="DEST", help="write the copies below DEST (a folder or s3://)")
    hide.add_argument(
        "--anonymize-method",
        type=_choice("anonymize_method"),
        metavar="{" + ",".join(METHODS) + "}",
        help="blur (default; a third of the face), mosaic or solid",
    )
    hide.add_argument(
        "--anonymize-mask-scale", type=_positive_float, metavar="F", help="ellipse around a face's box (1.3)"
    )
    hide.add_argument(
        "--anonymize-threshold",
        type=_fraction,
        metavar="T",
        help="hide faces scoring at least T (0.2: a missed face is a leak, an extra blur is not)",
    )
    hide.add_argument(
        "--anonymize-hold",
        type=_positive_float,
        metavar="S",
        help="a video: keep a face hidden S seconds before and after it is seen (0.5)",
    )
    hide.add_argument(
        "--drop-audio", action="store_true", default=None, help="a video's copy without audio, subtitles"
    )
    crops = run.add_argument_group("face crops (a table beside the detections: OUTPUT/_crops/)")
    crops.add_argument(
        "--crops", action="store_true", help="each face's crop, aligned by its landmarks as ArcFace takes it"
    )
    crops.add_argument(
        "--crop-size", type=_positive_int, metavar="N", help="pixels: 112 or 128 times k (112)"
    )
    crops.add_argument(
        "--crop-margin",
        type=float,
        metavar="F",
        help="a model without landmarks: square of the box's longer side times 1 + F (0.25)",
    )
    run.add_argument(
        "--include", metavar="GLOB", help="take keys matching GLOB (default: image and container extensions)"
    )
    containers = run.add_argument_group(
        "containers: WebDataset .tar / .tar.gz, Parquet tables of image bytes"
    )
    containers.add_argument(
        "--image-column", metavar="NAME", help="Parquet: the image bytes column (default: the only one)"
    )
    containers.add_argument(
        "--id-column", metavar="NAME", help="Parquet: a column carried into the output as `key`"
    )
    containers.add_argument(
        "--piece-bytes",
        type=_positive_int,
        default=PIECE_BYTES,
        metavar="N",
        help=f"a container's bytes per shard ({PIECE_BYTES}); a job keeps its value",
    )
    video = run.add_argument_group(
        f"videos: {', '.join(VIDEO_SUFFIXES)}; one row per detected frame, `VIDEO#t=SECONDS`"
    )
    frames = video.add_mutually_exclusive_group()
    frames.add_argument(
        "--fps",
        type=_positive_float,
        metavar="N",
        help="detect N frames a second (default: 1, or every frame with --anonymize)",
    )
    frames.add_argument("--every-frame", action="store_true", default=None, help="detect every frame")
    frames.add_argument("--keyframes", action="store_true", default=None, help="detect keyframes only (fast)")
    video.add_argument(
        "--piece-seconds",
        type=_positive_float,
        default=PIECE_SECONDS,
        metavar="S",
        help=f"a video's seconds per shard ({PIECE_SECONDS:g}); a job keeps its value",
    )
    run.add_argument("--ray-address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--overwrite", action="store_true", help="redo the job from scratch in OUTPUT")
    run.add_argument(
        "--reprocess-changed",
        action="store_true",
        help="redo images whose object changed (ETag or size) since an earlier run did them",
    )
    run.add_argument(
        "--retry-errors",
        nargs="?",
        const=TRANSIENT_KINDS,
        type=_choice("retry_errors"),
        metavar="KIND,...",
        help="redo the error rows of these kinds once, this run only "
        f"({', '.join(ErrorKind)}; without KIND: {','.join(TRANSIENT_KINDS)})",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list, compare with OUTPUT and plan, then say what a run would do (no Ray, nothing written)",
    )
    run.add_argument(
        "--rate",
        type=_positive_float,
        metavar="IMG_S",
        help="with --dry-run: images/s to estimate the time from (default: the last run's)",
    )
    run.add_argument(
        "--max-error-rate",
        type=_fraction,
        default=JobConfig.max_error_rate,
        metavar="R",
        help="exit 1 when more than this fraction of the run's images are error rows "
        f"({JobConfig.max_error_rate}); an error of facesweep's own always exits 1",
    )
    scoring = run.add_argument_group("evaluation after the job (as `facesweep eval OUTPUT GROUND_TRUTH`)")
    scoring.add_argument("--ground-truth", metavar="FILE", help="annotations to score OUTPUT against")
    scoring.add_argument("--eval-json", metavar="FILE", help="also write the figures to FILE as JSON")
    model.add_argument(
        "--model-sha256", metavar="HEX", help="refuse the model unless its bytes have this SHA-256"
    )
    score = commands.add_parser(
        "eval", help="score predictions against face boxes: WIDER FACE, OMZ or VOC AP"
    )
    score.add_argument(
        "predictions",
        metavar="PREDICTIONS",
        help="a facesweep output (local directory or s3://bucket/prefix), "
        "or a folder of official WIDER FACE txt predictions (<event>/<name>.txt)",
    )
    score.add_argument(
        "ground_truth",
        metavar="GROUND_TRUTH",
        help="one line per face: image_relpath x y w h [blur ... pose easy medium hard]; "
        "images pair with predictions by the longest path ending they share (unique)",
    )
    score.add_argument("--json", metavar="FILE", help="also write the figures to FILE as JSON")
    an_output = "a facesweep output: s3://bucket/prefix or a local directory"
    show = commands.add_parser("show", help="draw the faces on the images; write an HTML report to DIR")
    show.add_argument("output", metavar="OUTPUT", help=an_output)
    show.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_REPORT,
        help=f"folder for report.html and its images ({DEFAULT_REPORT})",
    )
    show.add_argument("--limit", type=_positive_int, default=200, help="images drawn, first by uri (200)")
    show.add_argument("--min-score", type=_fraction, default=0.0, help="draw faces scoring at least (0)")
    show.add_argument(
        "--ground-truth", metavar="FILE", help="annotations as for `facesweep eval`: APs, misses marked"
    )
    exporter = commands.add_parser("export", help="write the faces as COCO JSON, CSV or one row per face")
    exporter.add_argument("output", metavar="OUTPUT", help=an_output)
    exporter.add_argument("--format", choices=list(DEFAULT_FILES), required=True, help="what to write")
    exporter.add_argument(
        "--out",
        metavar="FILE",
        help="local path or s3:// URI; a folder (or a path ending in /) gets the default name inside it "
        "(default: " + ", ".join(f"{name} for {fmt}" for fmt, name in DEFAULT_FILES.items()) + ")",
    )
    exporter.add_argument(
        "--min-score", type=_fraction, default=0.0, help="keep faces scoring at least this (0: all)"
    )
    exporter.add_argument(
        "--image-root",
        metavar="ROOT",
        help="coco: file_name relative to ROOT (a local folder or s3://bucket/prefix holding every image)",
    )
    errors = commands.add_parser("errors", help="list the error rows: uri, error_kind, error (tab-separated)")
    errors.add_argument("output", metavar="OUTPUT", help=an_output)
    _quantize_parser(commands)
    return parser


def _quantize_parser(commands: argparse._SubParsersAction) -> None:
    """`facesweep quantize`'s arguments."""
    quantize = commands.add_parser(
        "quantize", help="INT8 of MODEL (NNCF post-training quantization) calibrated on INPUT's images"
    )
    quantize.add_argument(
        "model",
        metavar="MODEL",
        help=f"a built-in ({', '.join(BUILTIN_MODELS)}), or a path / s3:// URI to an OpenVINO .xml (with "
        ".bin) or .onnx",
    )
    quantize.add_argument(
        "--calibration", metavar="INPUT", required=True, help="images to calibrate on: any INPUT `run` takes"
    )
    quantize.add_argument("--out", metavar="OUT.xml", required=True, help="the INT8 IR (.bin written beside)")
    quantize.add_argument(
        "--images", type=_positive_int, default=300, metavar="N", help="calibrate on INPUT's first N (300)"
    )
    quantize.add_argument(
        "--preset",
        choices=("mixed", "performance"),
        default="mixed",
        help="NNCF's: activations asymmetric (mixed, the default) or symmetric (performance)",
    )
    quantize.add_argument(
        "--ground-truth", metavar="FILE", help="annotations as for `facesweep eval`: both models' APs on them"
    )
    quantize.add_argument(
        "--eval-input", metavar="INPUT", help="where the ground truth's images are (default: --calibration)"
    )
    quantize.add_argument(
        "--seconds", type=int, default=10, metavar="S", help="benchmark_app's seconds per model (10; 0: none)"
    )


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The job `run`'s arguments describe (the flags that are not a job's, like --dry-run, left out)."""
    options = {k: v for k, v in vars(args).items() if k in OPTIONS and k not in ("input", "output", "model")}
    return resolve(args.input, args.output, args.model, **options)


def summary(progress: JobProgress, output: str, then: str | None = None) -> str:
    """What a run did, then what OUTPUT now holds for the job; `then`: where the `next:` commands point
    (OUTPUT, or a copy of it)."""
    resumed, plan, total = progress.resumed, progress.plan, progress.total
    if progress.already_complete:
        lines = [f"nothing to do: {output} already holds every image of this job ({_counts(total)})"]
    elif not progress.images and not progress.plan.new:
        lines = [
            f"nothing new to detect: merged {plural(progress.compacted_shards, 'shard file')} that earlier "
            f"runs committed into {plural(progress.files, 'Parquet file')} in {progress.seconds:.1f} s",
            f"output: {output}",
            f"the job now holds {_counts(total)}",
        ]
    else:
        lines = [
            f"images: {progress.images}   faces: {progress.faces}   errors: {progress.errors}",
            f"time: {progress.seconds:.1f} s, of which start-up {progress.startup_seconds:.1f} s "
            "(Ray, models)",
            f"throughput: {progress.processing_images_per_second:.1f} images/s from the actors' start-up "
            f"to the last shard, {progress.images_per_second:.1f} overall",
            f"output: {output} ({plural(progress.files, 'Parquet file')} written)",
            f"the job now holds {_counts(total)}",
            *([f"anonymized copies: {progress.anonymized} written"] if progress.anonymized else []),
            *([f"blurred videos: {progress.blurred_videos} written"] if progress.blurred_videos else []),
            *(
                [f"blurred videos not written: {progress.blurred_failed} (see the log; a re-run tries again)"]
                if progress.blurred_failed
                else []
            ),
            *([f"face crops: {progress.crops} written to {output}/_crops/"] if progress.crops else []),
            f"next: facesweep show {then or output}  (or export it: --format coco|csv|flat-parquet)",
        ]
        if resumed.images:
            lines.insert(1, f"resumed: {plural(resumed.images, 'image')} already done by earlier runs")
            new = plan.new - progress.redone_changed - (progress.retried.entries if progress.retried else 0)
            pieces = f" ({plan.pieces} of them container or video pieces)" if plan.pieces else ""
            lines.insert(2, f"new: {plural(new, 'image')}{pieces}")
    lines += _changes(plan.changed, plan.vanished, progress.redone_changed, plan.changed_examples)
    if progress.retried:
        lines.append(_retried(progress.retried))
    if progress.errors:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(progress.error_kinds.items()))
        lines.append(f"errors by kind: {kinds}")
    if total.errors:
        lines.append(f"error rows: {error_query(output)}")
    if redone := progress.redone_shards:
        whys = ", ".join(f"{why.replace('_', ' ')} {n}" for why, n in sorted(redone.items()))
        lines.append(f"redone elsewhere: {plural(redone.total(), 'shard')} ({whys})")
    if progress.failed_shards:
        lines.append(f"failed ({len(progress.failed_shards)}), re-run to retry them:")
        lines += [f"  {failure}" for failure in progress.failed_shards]
    return "\n".join(lines)


def _counts(counts: ShardCounts) -> str:
    return (
        f"{plural(counts.images, 'image')}, {plural(counts.faces, 'face')}, "
        f"{plural(counts.errors, 'error row')}"
    )


def error_query(output: str) -> str:
    """The command that lists a job's error rows (`facesweep errors`), quoted for a shell."""
    return f"facesweep errors {shlex.quote(output)}"


def _changes(changed: int, vanished: int, redone: int, examples: list[str]) -> list[str]:
    lines = []
    if redone:
        lines.append(f"changed and redone: {plural(redone, 'image')} (their old rows were dropped)")
    if changed:
        lines.append(
            f"changed: {plural(changed, 'image')} changed since done (e.g. {examples[0]}); "
            "--reprocess-changed redoes them"
        )
    if vanished:
        lines.append(
            f"vanished: {plural(vanished, 'image')} done earlier no longer in INPUT (their rows stay)"
        )
    return lines


def _retried(retried: Retried) -> str:
    """`retried: 6 error rows (fetch); 5 came back ok, 1 still an error`."""
    kinds = ", ".join(retried.kinds)
    if not retried.errors:
        return f"retried: no error rows ({kinds}) to redo"
    still = "still an error" if retried.still_errors == 1 else "still errors"
    outcome = f"{retried.ok} came back ok, {retried.still_errors} {still}"
    not_done = retried.errors - retried.ok - retried.still_errors
    if not_done:
        outcome += f", {not_done} not done (a shard failed: a re-run does them)"
    return f"retried: {plural(retried.errors, 'error row')} ({kinds}); {outcome}"


def dry_run_summary(plan: DryRun) -> str:
    counts = plan.counts
    listed_videos = sum(counts.video_pieces.values())
    listed = _entries(
        counts.listed - counts.listed_pieces, counts.listed_pieces - listed_videos, listed_videos
    )
    new_videos = counts.video_pieces_new
    new = _entries(counts.new - counts.pieces, counts.pieces - new_videos, new_videos)
    lines = [
        f"listed: {listed}; already done: {counts.done}; new: {new}",
        *(["(a piece's images or frames are counted as it is read)"] if counts.listed_pieces else []),
        *(
            [f"overwrite: {plural(plan.overwritten, 'file')} of facesweep's in OUTPUT would be removed first"]
            if plan.overwritten
            else []
        ),
        f"plan: {plural(counts.shards, 'shard')} of up to {plan.shard_size} images, "
        f"{plural(plan.files, 'output file')} (up to {plan.rows_per_file} images each)",
        "requests expected: " + ", ".join(f"{k} {v}" for k, v in plan.expected_requests.items() if v),
        f"requests made to decide: {', '.join(f'{k} {v}' for k, v in plan.requests.items() if v)} "
        f"in {plan.seconds:.1f} s",
    ]
    if plan.rate:
        lines.append(
            f"estimate: {counts.new / plan.rate:.0f} s at {plan.rate:.1f} images/s ({plan.rate_source})"
        )
    else:
        lines.append("estimate: no rate known (no earlier run): give --rate IMG_S")
    lines += _changes(counts.changed, counts.vanished, 0, counts.changed_examples)
    if plan.retried:
        kinds = ", ".join(plan.retried.kinds)
        lines.append(f"retry: {plural(plan.retried.errors, 'error row')} of kinds {kinds} would be redone")
    if plan.in_use_by:
        lines.append(
            f"note: OUTPUT is in use by another facesweep job ({plan.in_use_by}): a run now is refused"
        )
    return "\n".join(lines)


def _entries(images: int, pieces: int, video_pieces: int = 0) -> str:
    """`13 images`, or with pieces `0 images and 1 container piece`, `2 images, 1 container piece and 4
    video pieces`."""
    parts = [plural(images, "image")]
    parts += [plural(pieces, "container piece")] * bool(pieces) + [
        plural(video_pieces, "video piece")
    ] * bool(video_pieces)
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def run_eval(args: argparse.Namespace) -> int:
    """`facesweep eval`."""
    return score(args.predictions, args.ground_truth, args.json)


def score(predictions: str, ground_truth: str, json_path: str | None) -> int:
    """The APs on stdout (and as JSON in `json_path`)."""
    report = evaluate(predictions, ground_truth)
    if json_path:
        try:
            Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise UserError(
                f"cannot write {json_path}: {error.strerror or error}: give a writable path"
            ) from None
    print(format_report(report))
    return 0


def run_show(args: argparse.Namespace) -> int:
    """`facesweep show`: the report's path on stdout."""
    report = write_report(args.output, args.out, args.limit, args.min_score, args.ground_truth)
    print(f"report: {report.path} ({report.drawn} images drawn)")
    if report.changed:
        print(
            f"facesweep: {report.changed} images changed since they were detected (shown, their faces not "
            "drawn): re-run the job with --reprocess-changed"
        )
    if report.unreadable and not report.drawn and not report.changed:
        print(
            f"facesweep: error: none of the {report.unreadable} images could be fetched or decoded now "
            f"(first: {report.first_reason}): check that they are still there and readable",
            file=sys.stderr,
        )
        return 1
    if report.unreadable:
        print(f"facesweep: {report.unreadable} images could not be shown (first: {report.first_reason})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """`facesweep export`: what was written on stdout."""
    done = export(args.output, args.format, args.out, args.min_score, args.image_root)
    print(f"wrote {done.path}: {done.faces} faces of {done.images} images ({done.errors} with errors)")
    return 0


def run_errors(args: argparse.Namespace) -> int:
    """`facesweep errors`: the error rows on stdout, tab-separated under a header; or that there are none."""
    rows, images = error_rows(args.output)
    if not rows:
        print(f"no error rows: every one of the {images} images of {args.output} was read")
        return 0
    for row in [COLUMNS, *rows]:
        print("\t".join("" if value is None else value for value in row))
    return 0


AP_NAMES = {"omz": "OMZ", "voc": "VOC"}


def run_quantize(args: argparse.Namespace) -> int:
    """`facesweep quantize`: MODEL to INT8 on INPUT's images; with --ground-truth both models' APs; both
    models' speed."""
    from facesweep.quantize import accuracy, benchmark, checked_out, quantize_model  # OpenVINO, NNCF

    out = checked_out(args.out)
    done = quantize_model(args.model, args.calibration, out, args.images, args.preset)
    quantized = done.quantized
    print(
        f"quantized {args.model} to INT8 (NNCF, {args.preset}) on {plural(quantized.images, 'image')} of "
        f"{args.calibration} in {quantized.seconds:.1f} s\nwrote {out} (SHA-256 {quantized.checksum[:16]}): "
        f"run it with --model {shlex.quote(str(out))}"
    )
    if args.ground_truth:
        images, models = args.eval_input or args.calibration, {"FP": args.model, "INT8": str(out)}
        scores = {kind: accuracy(model, images, args.ground_truth) for kind, model in models.items()}
        print(
            f"APs on the {plural(scores['FP'][0], 'image')} of {args.ground_truth} in {images} "
            "(detections from score 0.02):"
        )
        fp, int8 = scores["FP"][1], scores["INT8"][1]
        for label, aps, sign in (("FP", fp, ""), ("INT8", int8, ""), ("INT8 - FP", fp, "+")):
            values = {name: int8[name] - ap if sign else ap for name, ap in aps.items()}
            named = (f"{AP_NAMES.get(name, name)} {value:{sign}.4f}" for name, value in values.items())
            print(f"  {label:9}  " + "  ".join(named))
    if args.seconds > 0:
        paths = {"FP": done.plan.path, "INT8": out}
        rates = {kind: benchmark(path, done.network_size, args.seconds) for kind, path in paths.items()}
        width, height = done.network_size
        print(
            f"speed (benchmark_app -d CPU -hint throughput -t {args.seconds}, {width}x{height}): "
            f"FP {rates['FP']:.1f} images/s, INT8 {rates['INT8']:.1f} images/s: "
            f"{rates['INT8'] / rates['FP']:.2f}x"
        )
    return 0


def refuse(error: Exception | str) -> int:
    """Bad input's one line on stderr, and its exit code."""
    print(f"facesweep: error: {error}", file=sys.stderr)
    return 1


def _log_to_stderr() -> None:
    """The driver's status lines (starting Ray, actors, waiting for room) as `facesweep: ...` on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("facesweep: %(message)s"))
    logger = logging.getLogger("facesweep")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


READ_COMMANDS = {"eval": run_eval, "show": run_show, "export": run_export, "errors": run_errors}
"""Commands that read an output."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in READ_COMMANDS or args.command == "quantize":
        try:
            return {**READ_COMMANDS, "quantize": run_quantize}[args.command](args)
        except UserError as error:
            return refuse(error)
    try:
        args = run_arguments(parser, argv, args)
        config = config_from_args(args)
        if args.ground_truth:
            listing = list_images(config.input, config.include)
            check_pairing((table["uri"].to_pylist() for table in listing), args.ground_truth)
        if args.dry_run:
            print(dry_run_summary(dry_run(config, args.rate, args.overwrite)))
            return 0
    except UserError as error:
        return refuse(error)
    return run_command(args, config)


def run_command(args: argparse.Namespace, config: JobConfig) -> int:
    """`facesweep run` once its arguments are checked: the job, its summary and exit status."""
    from facesweep.api import run  # Ray and OpenVINO load only for a job

    _log_to_stderr()
    progress_view = progress_for(sys.stderr)
    failure = None
    try:
        result = run(config, on_progress=progress_view, overwrite=args.overwrite)
    except JobFailedError as failed:
        result, failure = failed.progress, failed
    except UserError as error:
        progress_view.close()
        return refuse(error)
    except KeyboardInterrupt as stop:  # run_job has stopped the actors (and the Ray it started)
        progress_view.close()
        if not isinstance(stop, JobInterrupted):
            print("interrupted before the job started: nothing was written", file=sys.stderr)
            return 130
        print(
            f"interrupted: {plural(stop.committed, 'image')} committed; re-run the same command to resume",
            file=sys.stderr,
        )
        return 130
    progress_view.close(result)
    for stage, text in result.tracebacks.items():
        print(f"facesweep: internal error in {stage} (the first of its kind):\n{text}", file=sys.stderr)
    print(summary(result, config.output))
    if failure is not None:
        return refuse(failure)
    if not args.ground_truth:
        return 0
    try:
        return score(config.output, args.ground_truth, args.eval_json)
    except UserError as error:
        return refuse(error)


if __name__ == "__main__":
    sys.exit(main())
