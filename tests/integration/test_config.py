"""Job specs (`facesweep run --config FILE`): every shipped spec loads, the file takes exactly the flags'
options with the flags' parsing, flags override it, bad files get one line naming the key; and the
evaluation spec really runs a job and scores it."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from facesweep.cli import build_parser, config_from_args, main
from facesweep.specs import ConfigError, run_arguments, spec_actions, subcommand
from facesweep.workers.config import JobConfig, Tuning, job_identity
from facesweep.workers.evaluation.evaluate import evaluate
from tests.paths import ROOT, WIDER_SUBSET

SPECS = sorted((ROOT / "jobs").glob("*.yaml"))
WIDER = WIDER_SUBSET

# One value for every option of `run`, as a spec writes it and as flags write it.
EVERY_KEY: dict[str, Any] = {
    "input": "s3://photos/2026-11/",
    "output": "s3://detections/2026-11/",
    "model": "centerface",
    "score_threshold": 0.25,
    "nms_threshold": 0.4,
    "format": "ssd",
    "face_label": 1,
    "resize": "letterbox",
    "input_size": "800x600",
    "color": "RGB",
    "mean": [104, 117, 123],
    "scale": [58.4, 57.1, 57.4],
    "scales": [0.5, 1, 2],
    "tile": True,
    "actors": 3,
    "cpus_per_actor": 1.5,
    "device": "GPU",
    "batch": 4,
    "precision": "f32",
    "shard_size": 128,
    "include": "*.jpg",
    "ray_address": "ray://head:10001",
    "overwrite": True,
    "ground_truth": "annotations.txt",
    "eval_json": "ap.json",
    "model_sha256": "ab" * 32,
    "requests_per_stream": 3,
    "shards_at_once": 4,
    "fetch_threads": 8,
}
EVERY_FLAG = [
    "s3://photos/2026-11/",
    "s3://detections/2026-11/",
    *["--model", "centerface", "--score-threshold", "0.25", "--nms-threshold", "0.4", "--format", "ssd"],
    *["--face-label", "1", "--resize", "letterbox", "--input-size", "800x600", "--color", "RGB"],
    *["--mean", "104,117,123", "--scale", "58.4,57.1,57.4", "--scales", "0.5,1,2", "--tile"],
    *["--actors", "3", "--cpus-per-actor", "1.5", "--device", "GPU", "--batch", "4", "--precision", "f32"],
    *["--shard-size", "128", "--include", "*.jpg", "--ray-address", "ray://head:10001", "--overwrite"],
    *["--ground-truth", "annotations.txt", "--eval-json", "ap.json", "--model-sha256", "ab" * 32],
    *["--requests-per-stream", "3", "--shards-at-once", "4", "--fetch-threads", "8"],
]


def write_spec(folder: Path, spec: dict[str, Any] | str, name: str = "job.yaml") -> Path:
    path = folder / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def parse(*argv: str) -> Any:
    """`run`'s arguments as main() sees them, the --config file merged in."""
    parser = build_parser()
    return run_arguments(parser, ["run", *argv], parser.parse_args(["run", *argv]))


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """main()'s one-line error for `facesweep run ARGV`, which must exit 1 before any work."""
    assert main(["run", *argv]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("facesweep: error: "), lines[0]
    return lines[0]


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in specs are relative to the current directory: the checkout's root."""
    monkeypatch.chdir(ROOT)
    if not WIDER.is_dir():
        pytest.skip("needs ../shared/data/widerface: evaluate-wider.yaml's ground truth must exist")


@pytest.mark.parametrize("spec", SPECS, ids=lambda path: path.name)
def test_shipped_spec_gives_a_job(spec: Path, at_root: None) -> None:
    args = parse("--config", str(spec))
    config = config_from_args(args)
    assert isinstance(config, JobConfig)
    assert config.input and config.output and config.input != config.output
    assert yaml.safe_load(spec.read_text()).keys() <= spec_actions(subcommand(build_parser(), "run")).keys()


def test_shipped_specs_say_what_they_are_for(at_root: None) -> None:
    assert {path.name for path in SPECS} >= {
        "nightly-annotation.yaml",
        "reprocess-bucket.yaml",
        "evaluate-wider.yaml",
    }
    nightly = config_from_args(parse("--config", str(ROOT / "jobs" / "nightly-annotation.yaml")))
    assert nightly.input.startswith("s3://") and nightly.include and nightly.shard_size != 64
    reprocess = config_from_args(parse("--config", str(ROOT / "jobs" / "reprocess-bucket.yaml")))
    assert reprocess.detector.model.endswith("/models/face-detection-0204.xml")
    assert "face-detection-0204" in reprocess.output and reprocess.detector.model_sha256
    wider = parse("--config", str(ROOT / "jobs" / "evaluate-wider.yaml"))
    assert wider.ground_truth.endswith("val-subset-145/annotations.txt") and wider.precision == "f32"
    assert wider.score_threshold == 0.02 and wider.input.endswith("val-subset-145/images")


def test_every_option_from_a_file_as_from_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The options above, and every switch (`true`: the flag is given), read from a file parse to exactly
    what the flags give."""
    monkeypatch.chdir(tmp_path)
    Path(EVERY_KEY["ground_truth"]).write_text("a.jpg 1 2 3 4\n")
    run = subcommand(build_parser(), "run")
    actions = spec_actions(run)
    assert EVERY_KEY.keys() <= actions.keys()
    others = {a for group in run._mutually_exclusive_groups for a in group._group_actions[1:]}  # one of each
    switches = {
        key: action.option_strings[-1]
        for key, action in actions.items()
        if action.nargs == 0 and action not in others
    }
    spec = EVERY_KEY | dict.fromkeys(switches, True)
    flags = EVERY_FLAG + [flag for flag in switches.values() if flag not in EVERY_FLAG]
    from_file = vars(parse("--config", str(write_spec(tmp_path, spec))))
    from_flags = vars(parse(*flags))
    assert from_file.pop("config") and from_flags.pop("config") is None
    assert from_file == from_flags
    assert from_file["mean"] == (104.0, 117.0, 123.0) and from_file["input_size"] == (800, 600)


def test_flags_override_the_file(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {"input": "in/", "output": "out/", "score_threshold": 0.3, "scales": [1, 2]})
    args = parse("--config", str(spec), "--score-threshold", "0.6", "other-in/")
    assert (args.input, args.output, args.score_threshold, args.scales) == (
        "other-in/",
        "out/",
        0.6,
        (1.0, 2.0),
    )
    args = parse("other-in/", "other-out/", "--scales", "0.5", "--config", str(spec))
    assert (args.input, args.output, args.scales) == ("other-in/", "other-out/", (0.5,))


def test_lists_and_scalars_take_the_flags_forms(tmp_path: Path) -> None:
    spec = {"input": "in", "output": "out", "scales": "0.5,1", "mean": "1,2,3", "input_size": 640}
    args = parse("--config", str(write_spec(tmp_path, spec)))
    assert (args.scales, args.mean, args.input_size) == ((0.5, 1.0), (1.0, 2.0, 3.0), (640, 640))


def test_booleans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {"input": "in", "output": "out"}
    assert parse("--config", str(write_spec(tmp_path, {**base, "tile": True}))).tile is True
    assert parse("--config", str(write_spec(tmp_path, {**base, "tile": False}))).tile is False
    assert parse("--config", str(write_spec(tmp_path, {**base, "tile": False})), "--tile").tile is True
    line = refusal(capsys, "--config", str(write_spec(tmp_path, {**base, "tile": "yes please"})))
    assert "tile must be true or false, got 'yes please'" in line
    line = refusal(capsys, "--config", str(write_spec(tmp_path, {**base, "model": True})))
    assert "model must be a string, got True" in line


def test_null_leaves_the_default(tmp_path: Path) -> None:
    args = parse("--config", str(write_spec(tmp_path, "input: in\noutput: out\nshard_size:\nformat: null\n")))
    assert (args.shard_size, args.format) == (64, None)


def test_unknown_key_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, {"input": "in", "output": "out", "scor_threshold": 0.3})
    line = refusal(capsys, "--config", str(spec))
    assert f"{spec}: unknown key 'scor_threshold', did you mean 'score_threshold'?" in line
    assert "(known: input, output, model, score_threshold," in line
    line = refusal(capsys, "--config", str(write_spec(tmp_path, {"shard-size": 10})))
    assert "unknown key 'shard-size', did you mean 'shard_size'?" in line


def test_every_bad_key_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(
        tmp_path, {"input": "in", "output": "out", "shard_size": 0, "scor_threshold": 0.3, "tile": "yes"}
    )
    line = refusal(capsys, "--config", str(spec))
    assert line.startswith(
        f"facesweep: error: {spec}: unknown key 'scor_threshold', did you mean 'score_threshold'?; "
        "shard_size must be an integer of at least 1, got 0; tile must be true or false, got 'yes' "
        "(known: input, output,"
    ), line


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("score_threshold", "high", "score_threshold must be a number between 0 and 1, got 'high'"),
        ("score_threshold", 1.5, "score_threshold must be a number between 0 and 1, got 1.5"),
        ("shard_size", 0, "shard_size must be an integer of at least 1, got 0"),
        ("face_label", 1.5, "face_label must be an integer, got 1.5"),
        ("mean", [1, 2], "mean must be three comma-separated numbers (A,B,C), got [1, 2]"),
        (
            "input_size",
            "big",
            "input_size must be a size WIDTHxHEIGHT (one number: a square) (WxH), got 'big'",
        ),
        ("scales", {"a": 1}, "scales must be comma-separated numbers greater than 0 (S,S,...), got {'a': 1}"),
        ("precision", "f64", "precision must be one of f32, bf16, f16, got 'f64'"),
        ("input", ["a", "b"], "input must be a string, got ['a', 'b']"),
    ],
)
def test_wrong_type_names_key_and_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: Any, expected: str
) -> None:
    spec = write_spec(tmp_path, {"input": "in", "output": "out", key: value})
    assert refusal(capsys, "--config", str(spec)) == f"facesweep: error: {spec}: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input: [in\n", "not valid YAML at line 2"),
        ("- input\n- output\n", "expected a mapping of option names to values"),
        ("", "expected a mapping of option names to values"),
    ],
)
def test_unreadable_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    spec = write_spec(tmp_path, text)
    assert refusal(capsys, "--config", str(spec)).startswith(f"facesweep: error: {spec}: {expected}")


def test_missing_spec_or_positionals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert f"{missing}: cannot read the job spec (No such file or directory)" in refusal(
        capsys, "--config", str(missing)
    )
    line = refusal(capsys, "--config", str(write_spec(tmp_path, {"input": "in"})))
    assert "OUTPUT missing: give it on the command line or as `output:` in a --config file" in line
    assert "INPUT and OUTPUT missing" in refusal(capsys)
    with pytest.raises(ConfigError, match="--eval-json needs --ground-truth"):
        parse("in", "out", "--eval-json", "ap.json")
    line = refusal(capsys, "in", "out", "--ground-truth", str(missing))
    assert f"ground truth {missing}: no such file" in line


@pytest.mark.slow
@pytest.mark.skipif(not WIDER.is_dir(), reason="needs ../shared/data/widerface (WIDER FACE val-subset-145)")
def test_evaluation_spec_runs_and_scores(
    ray_local: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """evaluate-wider.yaml pointed at 6 of its photos: the job runs, then prints and writes the same report
    as `facesweep eval OUTPUT GROUND_TRUTH`."""
    photos = sorted((WIDER / "images").rglob("*.jpg"))[:6]
    for photo in photos:
        target = tmp_path / "images" / photo.relative_to(WIDER / "images")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
    names = {f"images/{photo.relative_to(WIDER / 'images')}" for photo in photos}
    truth = [
        line for line in (WIDER / "annotations.txt").read_text().splitlines() if line.split(" ")[0] in names
    ]
    (tmp_path / "truth.txt").write_text("\n".join(truth) + "\n")
    spec = yaml.safe_load((ROOT / "jobs" / "evaluate-wider.yaml").read_text())
    spec |= {
        "input": str(tmp_path / "images"),
        "output": str(tmp_path / "out"),
        "ground_truth": str(tmp_path / "truth.txt"),
        "eval_json": str(tmp_path / "ap.json"),
    }
    assert main(["run", "--config", str(write_spec(tmp_path, spec, "evaluate.yaml"))]) == 0
    printed = capsys.readouterr().out
    assert "images: 6   faces:" in printed and "WIDER AP (official protocol): easy" in printed
    written = json.loads((tmp_path / "ap.json").read_text())
    direct = evaluate(str(tmp_path / "out"), tmp_path / "truth.txt")
    assert written["images"] == {"matched": 6, "missing": 0, "not_in_ground_truth": 0}
    assert {k: v for k, v in written.items() if k != "seconds"} == {
        k: v for k, v in direct.items() if k != "seconds"
    }
    assert written["wider_ap"]["easy"] > 0.5


def test_throughput_levers_are_settings_outside_the_identity() -> None:
    """`--fetch-threads` and the other levers reach the job's Tuning, and a re-run may change them: they
    are no part of the identity a re-run into the same OUTPUT must match."""
    tuned = config_from_args(
        parse(
            "in/",
            "out/",
            "--requests-per-stream=1",
            "--shards-at-once=3",
            "--fetch-threads=4",
            "--cpu-pinning",
        )
    )
    assert tuned.tuning == Tuning(requests_per_stream=1, shards_at_once=3, fetch_threads=4, cpu_pinning=True)
    plain = config_from_args(parse("in/", "out/"))
    assert plain.tuning == Tuning()
    assert job_identity(tuned, "c" * 64) == job_identity(plain, "c" * 64)
    assert job_identity(plain, "c" * 64) != job_identity(replace(plain, include="*.png"), "c" * 64)
