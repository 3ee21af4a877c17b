"""`facesweep` command line: parses flags into one JobConfig and runs it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, NoReturn

from facesweep.export import DEFAULT_FILES, export
from facesweep.progress import progress_for
from facesweep.report import write_report
from facesweep.specs import run_arguments
from facesweep.workers.config import (
    DEFAULT_MODEL,
    METHODS,
    OPTIONS,
    PIECE_BYTES,
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
from facesweep.workers.errors import ErrorKind, UserError
from facesweep.workers.evaluation.evaluate import check_pairing, evaluate, format_report
from facesweep.workers.inputs.listing import list_images
from facesweep.workers.job.preparation import DryRun, dry_run
from facesweep.workers.job.progress import JobProgress
from facesweep.workers.model.catalog import BUILTIN_MODELS
from facesweep.workers.model.formats import FORMATS

DEFAULT_MAX_ERROR_RATE = 0.1
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
        print(f"facesweep: error: {f'{command}: ' if command else ''}{message}", file=sys.stderr)
        sys.exit(1)


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
        "reaches the network twice as large, in tiles if it exceeds a fixed input) and merge by NMS (1)",
    )
    views.add_argument(
        "--tile",
        action="store_true",
        help="also run images larger than the network input as overlapping native-resolution tiles, "
        "merged by NMS with the whole image (small faces in big photos; fixed-input models)",
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
    run.add_argument("--ray-address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    run.add_argument("--overwrite", action="store_true", help="redo the job from scratch in OUTPUT")
    run.add_argument(
        "--reprocess-changed",
        action="store_true",
        help="redo images whose object changed (ETag or size) since an earlier run did them",
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
        default=DEFAULT_MAX_ERROR_RATE,
        metavar="R",
        help="exit 1 when more than this fraction of the run's images are error rows "
        f"({DEFAULT_MAX_ERROR_RATE}); an error of facesweep's own always exits 1",
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
        "images pair with predictions by path suffix",
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
    return parser


def config_from_args(args: argparse.Namespace) -> JobConfig:
    """The job `run`'s arguments describe (the flags that are not a job's, like --dry-run, left out)."""
    options = {k: v for k, v in vars(args).items() if k in OPTIONS and k not in ("input", "output", "model")}
    return resolve(args.input, args.output, args.model, **options)


def summary(progress: JobProgress, output: str) -> str:
    resumed, plan = progress.resumed, progress.plan
    earlier = f"{resumed.images} images, {resumed.faces} faces, {resumed.errors} errors"
    if progress.already_complete:
        lines = [f"nothing to do: {output} already holds every image of this job ({earlier})"]
    else:
        lines = [
            f"images: {progress.images}   faces: {progress.faces}   errors: {progress.errors}",
            f"time: {progress.seconds:.1f} s, of which start-up {progress.startup_seconds:.1f} s "
            "(Ray, models)",
            f"throughput: {progress.processing_images_per_second:.1f} images/s after start-up, "
            f"{progress.images_per_second:.1f} images/s overall",
            f"output: {output} ({progress.files} Parquet files written)",
            *([f"anonymized copies: {progress.anonymized} written"] if progress.anonymized else []),
            *([f"face crops: {progress.crops} written to {output}/_crops/"] if progress.crops else []),
            f"next: facesweep show {output}  (or export it: --format coco|csv|flat-parquet)",
        ]
        if resumed.images:
            lines.insert(1, f"resumed: {resumed.images} images already done by earlier runs ({earlier})")
            pieces = f" ({plan.pieces} of them container pieces)" if plan.pieces else ""
            lines.insert(2, f"new: {plan.new} images{pieces}")
    lines += _changes(plan.changed, plan.vanished, progress.redone_changed, plan.changed_examples)
    if progress.errors:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(progress.error_kinds.items()))
        lines += [f"errors by kind: {kinds}", f"error rows: {error_query(output)}"]
    if progress.failed_shards:
        lines.append(f"failed ({len(progress.failed_shards)}), re-run to retry them:")
        lines += [f"  {failure}" for failure in progress.failed_shards]
    return "\n".join(lines)


def error_query(output: str) -> str:
    """A DuckDB query that lists a job's error rows."""
    files = f"{output.rstrip('/')}/*.parquet"
    return f"duckdb -c \"SELECT uri, error_kind, error FROM '{files}' WHERE status = 'error'\""


def exit_status(progress: JobProgress, max_error_rate: float) -> str | None:
    """Why a finished run must exit 1 (an error of ours, too many bad images, failed shards), or None."""
    internal = progress.error_kinds.get(ErrorKind.INTERNAL, 0)
    if internal:
        return (
            f"{internal} images failed inside facesweep (a bug, not the images: error_kind 'internal'); "
            "the first traceback of each stage is above and in _job.json: please report it"
        )
    if progress.images and progress.errors / progress.images > max_error_rate:
        rate = progress.errors / progress.images
        return (
            f"{progress.errors} of {progress.images} images are error rows ({rate:.1%}, more than "
            f"--max-error-rate {max_error_rate:g})"
        )
    if progress.failed_shards:
        return f"{len(progress.failed_shards)} shards or compactions failed: re-run to retry them"
    return None


def _changes(changed: int, vanished: int, redone: int, examples: list[str]) -> list[str]:
    lines = []
    if redone:
        lines.append(f"changed: {redone} images changed since they were done; their old rows were dropped")
    if changed:
        lines.append(
            f"changed: {changed} images changed since they were done (e.g. {examples[0]}); "
            "--reprocess-changed redoes them"
        )
    if vanished:
        lines.append(f"vanished: {vanished} images done earlier are no longer in INPUT (their rows stay)")
    return lines


def dry_run_summary(plan: DryRun) -> str:
    counts = plan.counts
    lines = [
        f"listed: {counts.listed} images; already done: {counts.done}; new: {counts.new}",
        f"plan: {counts.shards} shards of up to {plan.shard_size} images, {plan.files} output files "
        f"(up to {plan.rows_per_file} images each)",
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
    return "\n".join(lines)


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
    if report.unreadable and not report.drawn:
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


READ_COMMANDS = {"eval": run_eval, "show": run_show, "export": run_export}
"""Commands that read an output."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in READ_COMMANDS:
        try:
            return READ_COMMANDS[args.command](args)
        except UserError as error:
            return refuse(error)
    try:
        args = run_arguments(parser, argv, args)
        config = config_from_args(args)
        if args.ground_truth:
            listing = list_images(config.input, config.include)
            check_pairing((table["uri"].to_pylist() for table in listing), args.ground_truth)
        if args.dry_run:
            print(dry_run_summary(dry_run(config, args.rate)))
            return 0
    except UserError as error:
        return refuse(error)
    return run_command(args, config)


def run_command(args: argparse.Namespace, config: JobConfig) -> int:
    """`facesweep run` once its arguments are checked: the job, its summary and exit status."""
    from facesweep.api import run  # Ray and OpenVINO load only for a job

    _log_to_stderr()
    progress_view = progress_for(sys.stderr)
    seen: list[JobProgress] = []

    def on_progress(progress: JobProgress) -> None:
        seen[:] = [progress]
        progress_view(progress)

    try:
        result = run(config, on_progress=on_progress, overwrite=args.overwrite)
    except UserError as error:
        progress_view.close()
        return refuse(error)
    except KeyboardInterrupt:  # run_job has stopped the actors (and the Ray it started) on its way out
        progress_view.close()
        done = seen[0].resumed.images + seen[0].images if seen else 0
        print(f"interrupted: {done} images committed; re-run the same command to resume", file=sys.stderr)
        return 130
    progress_view.close(result)
    for stage, text in result.tracebacks.items():
        print(f"facesweep: internal error in {stage} (the first of its kind):\n{text}", file=sys.stderr)
    print(summary(result, config.output))
    if reason := exit_status(result, args.max_error_rate):
        return refuse(reason)
    if not args.ground_truth:
        return 0
    try:
        return score(config.output, args.ground_truth, args.eval_json)
    except UserError as error:
        return refuse(error)


if __name__ == "__main__":
    sys.exit(main())
