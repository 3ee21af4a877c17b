"""workers/config.py: one table of options for the CLI, the YAML specs, --resume and the API; the same
bad value refused with the same reason everywhere; the identity made of the fields marked as deciding the
faces."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

import facesweep
from facesweep.cli import build_parser
from facesweep.specs import read_spec, subcommand
from facesweep.workers.config import (
    OPTIONS,
    ConfigError,
    DetectorSettings,
    JobConfig,
    Tuning,
    flatten,
    job_identity,
    resolve,
)

NOT_JOB_FLAGS = {"help", "config", "resume", "overwrite", "dry_run", "rate"}
NOT_JOB_FLAGS |= {"ground_truth", "eval_json"}


def run_parser() -> argparse.ArgumentParser:
    return subcommand(build_parser(), "run")


def test_every_run_flag_is_an_option_of_the_table_and_back() -> None:
    dests = {action.dest for action in run_parser()._actions} - NOT_JOB_FLAGS
    assert dests == set(OPTIONS)


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("score_threshold", "high", "expected a number, got 'high'"),
        ("score_threshold", "2", "must be between 0 and 1, got 2.0"),
        ("shard_size", "0", "must be at least 1, got 0"),
        ("input_size", "12xq", "expected WIDTHxHEIGHT, got '12xq'"),
        ("anonymize_method", "paint", "must be one of blur, mosaic, solid, got 'paint'"),
    ],
)
def test_the_api_the_cli_and_a_spec_refuse_a_bad_value_with_the_same_reason(
    option: str, value: str, reason: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    options = {option: value, **({"anonymize": "copies"} if option.startswith("anonymize_") else {})}
    with pytest.raises(ConfigError) as api:
        facesweep.job_config("in", "out", **options)
    assert str(api.value) == f"{OPTIONS[option].flag}: {reason}"
    flags = [f"{OPTIONS[name].flag}={text}" for name, text in options.items()]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "in", "out", *flags])
    assert f"argument {OPTIONS[option].flag}: {reason}" in capsys.readouterr().err
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"{option}: {value}\n")
    with pytest.raises(ConfigError, match=f"spec.yaml: {option} must be"):
        read_spec(str(spec), run_parser())


def test_a_python_value_of_the_wrong_type_is_refused_not_stored() -> None:
    with pytest.raises(ConfigError, match="--score-threshold: expected a number"):
        resolve("in", "out", score_threshold=[0.5])
    with pytest.raises(ConfigError, match="--tile: must be true or false"):
        resolve("in", "out", tile="yes")
    with pytest.raises(TypeError, match="unknown job options: scor_threshold"):
        resolve("in", "out", scor_threshold=0.3)


def test_options_of_a_product_need_its_switch() -> None:
    with pytest.raises(ConfigError, match="--anonymize-method need --anonymize DEST"):
        resolve("in", "out", anonymize_method="solid")
    with pytest.raises(ConfigError, match="--crop-size need --crops"):
        resolve("in", "out", crop_size=224)
    assert resolve("in", "out", crops=True, crop_size=224).crops.crop_size == 224


def test_resolve_and_flatten_are_inverse() -> None:
    config = resolve(
        "s3://b/in",
        "s3://b/out",
        "face-detection-0204",
        score_threshold=0.3,
        scales=(1.0, 2.0),
        actors=3,
        anonymize="s3://b/copies",
        anonymize_method="mosaic",
        crops=True,
        fetch_threads=4,
        piece_bytes=1024,
    )
    options = flatten(config)
    again = resolve(options.pop("input"), options.pop("output"), options.pop("model"), **options)
    assert again == config
    assert flatten(dataclasses.asdict(config)) == flatten(config)  # as _job.json stores it


def test_the_identity_is_the_fields_marked_as_deciding_the_faces() -> None:
    base = resolve("in", "out")
    identity = job_identity(base, "abc")
    faces = {f.name for f in dataclasses.fields(DetectorSettings) if f.metadata.get("faces")}
    native = {"resolution", "max_side"}  # only at native resolution: older records ran at a fixed one
    given = {"second_look"}  # only when given: older records had none
    assert set(identity) == {"input", "include", "model_sha256"} | faces - native - given
    at_native = dataclasses.replace(base, detector=dataclasses.replace(base.detector, resolution="native"))
    assert {k: job_identity(at_native, "abc")[k] for k in native} == {
        "resolution": "native",
        "max_side": 1024,
    }
    for lever in (f.name for f in dataclasses.fields(Tuning)):
        assert job_identity(dataclasses.replace(base, tuning=Tuning(**{lever: 7})), "abc") == identity
    changed = dataclasses.replace(base, detector=dataclasses.replace(base.detector, score_threshold=0.9))
    assert job_identity(changed, "abc")["score_threshold"] == 0.9
    assert job_identity(dataclasses.replace(base, actors=9, shard_size=3), "abc") == identity
    assert isinstance(base, JobConfig)
