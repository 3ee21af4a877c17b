"""Job specs: YAML files whose keys are `facesweep run`'s options, read by `facesweep run --config FILE`.

The allowed keys, their types and choices come from the `run` parser itself, so the file and the flags
cannot drift apart: a key is a flag's long name with underscores (`score_threshold` for
`--score-threshold`; `input` and `output` for the positionals), and its value goes through the flag's own
`type=` function and `choices`; `true` for a switch means the switch is given. The file's values become
the parser's defaults, so flags given on the command line win.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from facesweep.workers.config import ConfigError, flatten
from facesweep.workers.output.record import read_record

NOT_FROM_FILE = {"help", "config", "resume"}
TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", None: "a string"}


def run_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, args: argparse.Namespace
) -> argparse.Namespace:
    """`run`'s arguments: `argv` parsed again with the --config file's values as defaults (so flags override
    them), checked for what neither gave."""
    if args.config and args.input is not None and args.output is None:
        print(
            f"facesweep: note: {args.input} is taken as INPUT (OUTPUT from {args.config}); to override "
            "OUTPUT, give both INPUT and OUTPUT",
            file=sys.stderr,
        )
    if args.resume or args.config:
        run = subcommand(parser, "run")
        if args.resume:
            run.set_defaults(**resume_values(args.resume, run))
        if args.config:
            run.set_defaults(**read_spec(args.config, run))
        args = parser.parse_args(argv)
        if args.resume and args.output.rstrip("/") != args.resume.rstrip("/"):
            raise ConfigError(f"--resume {args.resume} and OUTPUT {args.output} differ: give one of them")
    missing = [name for name in ("input", "output") if args.__dict__[name] is None]
    if missing:
        names = " and ".join(name.upper() for name in missing)
        keys = " and ".join(f"`{name}:`" for name in missing)
        raise ConfigError(
            f"{names} missing: give {'it' if len(missing) == 1 else 'them'} on the command "
            f"line or as {keys} in a --config file"
        )
    if args.eval_json and not args.ground_truth:
        raise ConfigError("--eval-json needs --ground-truth FILE (or `ground_truth:` in the --config file)")
    if args.ground_truth and not Path(args.ground_truth).is_file():
        raise ConfigError(f"ground truth {args.ground_truth}: no such file")
    return args


def spec_actions(run: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """`run`'s options and positionals by the keys a job spec names them with."""
    return {_key(action): action for action in run._actions if action.dest not in NOT_FROM_FILE}


def _key(action: argparse.Action) -> str:
    """The long flag without its dashes, inner dashes as underscores; a positional's name."""
    flags = [flag for flag in action.option_strings if flag.startswith("--")]
    return flags[0][2:].replace("-", "_") if flags else action.dest


def read_spec(path: str, run: argparse.ArgumentParser) -> dict[str, Any]:
    """The spec at `path` as `run`'s parsed values by dest (null values left out: the option's default).

    Every bad key is named at once, in one line."""
    actions = spec_actions(run)
    values, problems = {}, []
    for key, value in _read_mapping(path).items():
        if key not in actions:
            problems.append(f"unknown key {key!r}{_did_you_mean(key, actions)}")
        elif value is not None:
            try:
                values[actions[key].dest] = _convert(key, value, actions[key])
            except ConfigError as problem:
                problems.append(str(problem))
    if problems:
        known = f" (known: {', '.join(actions)})" if any("unknown key" in p for p in problems) else ""
        raise ConfigError(f"{path}: {'; '.join(problems)}{known}")
    return values


def resume_values(output: str, run: argparse.ArgumentParser) -> dict[str, Any]:
    """`facesweep run --resume OUTPUT`: the settings of the run that wrote OUTPUT (its `_job.json`), as
    `run`'s values by dest (a spec's keys are the dests too), the one-off --reprocess-changed and
    --retry-errors left out."""
    record = read_record(output)
    if record is None or record.config is None:
        raise ConfigError(
            f"--resume {output}: no _job.json there: give the OUTPUT of an earlier `facesweep run`"
        )
    values = {**flatten(record.config), "output": output}
    dests = {action.dest for action in spec_actions(run).values()} - {"reprocess_changed", "retry_errors"}
    return {k: v for k, v in values.items() if k in dests}


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand `name` (`run`) of the top-level parser."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def _read_mapping(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the job spec ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(
            f"{path}: not valid YAML{line}: {getattr(error, 'problem', None) or error}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ConfigError(
            f"{path}: expected a mapping of option names to values, like `score_threshold: 0.3`"
        )
    return data


def _did_you_mean(key: str, actions: dict[str, argparse.Action]) -> str:
    close = difflib.get_close_matches(key.replace("-", "_"), actions, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _convert(key: str, value: Any, action: argparse.Action) -> Any:
    """The value `run` would hold had its flag been given the value's string form."""
    if action.nargs == 0:  # a switch (store_true, store_false): true means the flag is given
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return action.const if value else action.default
    if action.nargs == "?" and action.option_strings and isinstance(value, bool):  # true: the flag alone
        return action.const if value else action.default
    text = _flag_text(value, takes_list=isinstance(action.metavar, str) and "," in action.metavar)
    if text is None:
        raise ConfigError(f"{key} must be {_expected(action)}, got {value!r}")
    if action.choices is not None and text not in action.choices:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    if action.type is None:
        return text
    try:
        return action.type(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        raise ConfigError(f"{key} must be {_expected(action)}, got {value!r}") from None


def _flag_text(value: Any, takes_list: bool) -> str | None:
    """What the flag would be given: numbers and strings as written, lists comma-joined for flags whose
    metavar is a comma-separated list (`--mean A,B,C`); None for anything else."""
    items = value if takes_list and isinstance(value, list) and value else [value]
    if all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in items):
        return ",".join(map(str, items))
    return None


def _expected(action: argparse.Action) -> str:
    """What a value of `action` looks like: the type function's docstring or the type's name, and the
    metavar when the flag's help shows one."""
    kind = TYPE_NAMES.get(action.type) or (action.type.__doc__ or action.type.__name__).strip().rstrip(".")
    kind = kind[0].lower() + kind[1:]
    metavar = action.metavar if isinstance(action.metavar, str) and action.option_strings else None
    shown = metavar and not metavar.startswith("{")  # a choices metavar repeats what `kind` says
    return f"{kind} ({metavar})" if shown else kind
