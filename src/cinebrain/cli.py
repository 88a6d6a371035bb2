"""The ``cinebrain`` command line.

Every run option exists both as a flag and as a key of the YAML run config (the flags
are generated from :class:`cinebrain.config.RunConfig`, so the two never drift apart).
User errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from cinebrain import __version__
from cinebrain.config import NULL, STAGE_OPTIONS, RunConfig, config_leaves, load_config
from cinebrain.errors import InputError

#: Keys that are not options of a command: the study and run folder have their own flags;
#: where the training engine writes and whether it shows progress are set by the pipeline.
_SKIP = {"study", "out", "autoencoder.train.out_dir", "autoencoder.train.progress",
         "videogpt.vqvae.train.out_dir", "videogpt.vqvae.train.progress",
         "videogpt.gpt.train.out_dir", "videogpt.gpt.train.progress"}


def _leaf_fields(model: type[BaseModel], prefix: str = ""):
    """(dotted key, field) for every non-model field of ``model``, recursively."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _is_union(ann: Any) -> bool:
    return get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None))


def is_nullable(ann: Any) -> bool:
    """Whether an option's type admits null (``X | None``)."""
    return _is_union(ann) and type(None) in get_args(ann)


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


#: What a command-line value ``none`` (or ``null``) of a nullable option means.
_NULL_WORDS = ("none", "null")


def _or_null(parse):
    """``parse``, except that ``none`` / ``null`` give :data:`NULL` (the key set to null)."""
    def parse_or_null(text: str):
        return NULL if text.strip().lower() in _NULL_WORDS else parse(text)

    parse_or_null.__name__ = getattr(parse, "__name__", "value")
    return parse_or_null


def _json_option(nullable: bool):
    """A JSON-valued option (a mapping); ``null`` gives null only where the key allows it."""
    def json_value(text: str):
        if text.strip().lower() in _NULL_WORDS:
            if nullable:
                return NULL
            raise argparse.ArgumentTypeError("null is not allowed here: give a JSON object ({} for none)")
        try:
            value = json.loads(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not valid JSON: {text!r}") from None
        if value is None:  # e.g. " null" spelled oddly: never dropped silently
            raise argparse.ArgumentTypeError("null is not allowed here: give a JSON object")
        return value

    json_value.__name__ = "JSON"
    return json_value


def _union_option(args: tuple, nullable: bool):
    """An option of several types (e.g. a mapping, a list or a file name): JSON where the
    value reads as a JSON object or list, else a number or text as the types allow."""
    def value(text: str):
        stripped = text.strip()
        if nullable and stripped.lower() in _NULL_WORDS:
            return NULL
        if stripped[:1] in "{[" and stripped:
            try:
                return json.loads(stripped)
            except ValueError:
                raise argparse.ArgumentTypeError(f"not valid JSON: {text!r}") from None
        for kind in (int, float):
            if kind in args:
                with contextlib.suppress(ValueError):
                    return kind(stripped)
        return text

    value.__name__ = "value"
    return value


def _bool_value(text: str) -> bool:
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.strip().lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return words[text.strip().lower()]


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--section-key`` flags for every RunConfig option."""
    parser.add_argument("config", nargs="?", help="YAML run config (every flag below is also a key)")
    parser.add_argument("--study", help="study YAML file (config key: study)")
    parser.add_argument("--out", help="run folder (config key: out)")
    group = parser.add_argument_group("run options (YAML keys in parentheses)")
    for dotted, field in _leaf_fields(RunConfig):
        if dotted in _SKIP:
            continue
        flag = "--" + dotted.replace(".", "-").replace("_", "-")
        ann = _strip_optional(field.annotation)
        nullable = is_nullable(field.annotation)
        default = field.get_default(call_default_factory=True)
        help_ = f"{field.description or ''} ({dotted}; default: {default})"
        if nullable:
            help_ += "; none (or null) sets it to null"
        kwargs: dict[str, Any] = {"dest": dotted, "default": None, "help": help_}
        origin = get_origin(ann)
        # ``none`` / ``null`` sets a nullable option to null; elsewhere it is refused
        wrap = _or_null if nullable else (lambda parse: parse)
        nulls = [NULL] if nullable else []
        if ann is bool and not nullable:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif ann is bool:
            kwargs["type"] = wrap(_bool_value)
        elif origin is list and isinstance(get_args(ann)[0], type) \
                and issubclass(get_args(ann)[0], BaseModel):
            kwargs["type"] = _json_option(nullable)  # a list of objects: one JSON list
            kwargs["help"] = help_ + " [JSON list]"
        elif origin is list:
            (item,) = get_args(ann)
            kwargs["nargs"] = "*"
            if get_origin(item) is Literal:
                kwargs["choices"] = list(get_args(item)) + nulls
                kwargs["type"] = wrap(str)
            else:
                kwargs["type"] = wrap(item if item in (int, float, str) else str)
        elif origin is tuple:
            kwargs["nargs"] = len(get_args(ann))
            kwargs["type"] = wrap(get_args(ann)[0])
            kwargs["metavar"] = ("W", "H")[: len(get_args(ann))]
        elif origin is dict:
            kwargs["type"] = _json_option(nullable)
            kwargs["help"] = help_ + " [JSON]"
        elif origin is Literal:
            kwargs["choices"] = list(get_args(ann)) + nulls
            kwargs["type"] = wrap(str)
        elif _is_union(ann):  # several types besides None
            kwargs["type"] = _union_option(tuple(a for a in get_args(ann) if a is not type(None)),
                                           nullable)
            kwargs["help"] = help_ + " [JSON or text]"
        else:
            kwargs["type"] = wrap(ann if ann in (int, float, str) else str)
        if "metavar" not in kwargs and "choices" not in kwargs and "action" not in kwargs:
            kwargs["metavar"] = dotted.split(".")[-1].upper()
        group.add_argument(flag, **kwargs)


def _flag(dotted: str) -> str:
    return "--" + dotted.replace(".", "-").replace("_", "-")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given on the command line (dotted key -> value; NULL: none)."""
    given: dict[str, Any] = {}
    for dotted, _ in _leaf_fields(RunConfig):
        value = getattr(args, dotted, None) if dotted not in _SKIP else None
        if isinstance(value, list) and NULL in value:
            if len(value) > 1:
                raise InputError(_flag(dotted), "none means null and must be given alone",
                                 f"give {_flag(dotted)} none, or a list of values")
            value = NULL
        if value is not None:
            given[dotted] = value
    if getattr(args, "threads", None) is None and getattr(args, "global_threads", None):
        given["threads"] = args.global_threads  # `cinebrain --threads N COMMAND`
    return given


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = {"study": args.study, "out": args.out, **_given(args)}
    if args.config is None and args.study is None:
        raise InputError("command line", "no study given", "pass a run config file or --study STUDY.yaml")
    config = load_config(args.config, overrides)
    set_threads(config.threads)
    return config


def _explicit(args: argparse.Namespace) -> set[str]:
    """Dotted keys set on the command line or in the run config file."""
    keys = set(_given(args))
    if args.config:
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            keys |= set(config_leaves(yaml.safe_load(Path(args.config).read_text()) or {}))
    return keys


#: Options that concern every stage (where, how verbose, how many threads).
_EVERY_STAGE = ("study", "out", "progress", "threads")
#: The stages whose outputs a stage reads, and whose options it must share.
_READS = {"fit": ("features",), "evaluate": ("features", "fit"), "train": ("features",)}
#: What ``run`` applies (every ridge stage; the autoencoder is ``train``'s).
_RUN_STAGES = ("features", "fit", "evaluate", "report")


def _applies(stage: str, dotted: str) -> bool:
    """Whether ``stage`` (a command) applies the option ``dotted``."""
    if dotted in _EVERY_STAGE:
        return True
    if stage == "run":
        return dotted == "report" or any(_applies(s, dotted) for s in _RUN_STAGES)
    return any(dotted == p or dotted.startswith(p + ".") for p in STAGE_OPTIONS.get(stage, ()))


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def stage_options(stage: str, config: RunConfig, given: set[str], explicit: set[str],
                  log=print) -> RunConfig:
    """Check ``config`` against the run folder before ``stage`` runs, and say what changes.

    * An option of an earlier stage whose outputs this stage reads (the features of a fit,
      the model of an evaluation) must be the one that stage ran with (its manifest records
      its config): given explicitly with another value it is refused (rerun that stage);
      left at its default it is taken from that stage, with a line saying so.
    * Options given on the command line that this stage does not apply are named: they
      are saved in the run folder's config.yaml for the stages that use them.
    * Options that differ from the run folder's config.yaml are named, with the stages that
      will run from them; the stage's manifest records them (``config_changes``).

    ``given``: keys set on the command line; ``explicit``: those and the config file's.
    Returns the config the stage runs with.
    """
    import yaml
    from pydantic import ValidationError

    from cinebrain.config import PATH_KEYS, config_error
    from cinebrain.pipelines.runfolder import COMMAND, RunFolder

    folder = RunFolder(config.out)
    paths = {".".join(k) for k in PATH_KEYS}
    current = config_leaves(config)
    adopted: dict[str, Any] = {}
    for upstream in _READS.get(stage, ()):
        m = folder.manifest(upstream)
        if m is None or not m.config:
            continue
        made = config_leaves(m.config)
        for key, value in current.items():
            if (key in paths or key == "subjects" or key in _EVERY_STAGE
                    or not _applies(upstream, key) or key not in made or made[key] == value):
                continue
            if key in explicit:
                raise InputError(
                    folder.root, f"the {upstream} outputs that {stage} reads were made with "
                    f"{key} {_show(made[key])}, not {_show(value)}",
                    f"run `{COMMAND.get(upstream, upstream)}` with {_flag(key)} first, or leave "
                    f"it out (`cinebrain {stage} {folder.config}` runs with the run's options)")
            adopted[key] = made[key]
    if adopted:
        data = config.model_dump(mode="json")
        for key, value in adopted.items():
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        try:
            config = RunConfig.model_validate(data)
        except ValidationError as e:
            raise config_error(f"{folder.root} (options of its earlier stages)", e, RunConfig) from None
        log(f"[{stage}] taken from the stages whose outputs it reads: "
            + ", ".join(f"{k} {_show(v)}" for k, v in adopted.items()))
    unused = [k for k in sorted(given) if not _applies(stage, k)]
    if unused:
        users = sorted({s for k in unused for s in STAGE_OPTIONS if _applies(s, k)})
        log(f"[{stage}] not applied by {stage}, saved in {folder.config} for "
            f"{', '.join(users) or 'other stages'}: "
            + ", ".join(f"{k} {_show(current.get(k))}" for k in unused))
    if folder.config.is_file():
        try:
            saved = config_leaves(yaml.safe_load(folder.config.read_text()) or {})
        except (yaml.YAMLError, AttributeError):
            saved = {}
        now = config_leaves(config)
        changed = {k: (saved.get(k), v) for k, v in now.items()
                   if k not in _EVERY_STAGE and k in saved and saved[k] != v}
        if changed:
            later = [s for s in ("fit", "evaluate", "report", "train")
                     if s != stage and (folder.manifest(s) is not None or s in _later(stage))]
            log(f"[{stage}] options changed from {folder.config}: "
                + ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changed.items())
                + f"; saved there when {stage} finishes (stages/{stage}.json records them), so "
                f"{', '.join(dict.fromkeys(later)) or 'later stages'} run from it will use them")
    return config


def _later(stage: str) -> tuple[str, ...]:
    order = ("features", "fit", "evaluate", "report")
    return order[order.index(stage) + 1:] if stage in order else ()


def _stage_config(args: argparse.Namespace, stage: str) -> RunConfig:
    """The config of a stage command, checked against its run folder (:func:`stage_options`)."""
    config = _config_from_args(args)
    return stage_options(stage, config, set(_given(args)), _explicit(args))


#: BLAS / OpenMP thread variables, read by each library when it loads.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
#: The user's own thread variables (before :func:`set_threads` sets any).
_USER_THREADS = {v: os.environ[v] for v in _THREAD_VARIABLES if os.environ.get(v)}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; cgroup or taskset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for BLAS (numpy, scipy: threadpoolctl) and torch; returns it.

    ``None``: the cores available to the process, unless a thread variable such as
    ``OMP_NUM_THREADS`` is set in the environment, which is then left to decide. The
    variables are also set, for libraries loaded later and for child processes.
    """
    if n is None:
        if _USER_THREADS:
            os.environ.update(_USER_THREADS)
            return int(_USER_THREADS.get("OMP_NUM_THREADS") or 0) or available_cores()
        n = available_cores()
    for var in _THREAD_VARIABLES:
        os.environ[var] = str(n)
    import numpy  # noqa: F401  (their BLAS loaded, so that the limit reaches it)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if "torch" in sys.modules:  # a torch imported later reads OMP_NUM_THREADS
        sys.modules["torch"].set_num_threads(n)
    return n


def _threads_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _stage(name: str):
    def run(args: argparse.Namespace) -> int:
        config = _stage_config(args, name)
        from cinebrain.pipelines import ridge

        if name == "fit" and _torchrun_rank() is not None:
            return _fit_distributed(config)
        print(f"[{name}] run folder {config.out}")
        getattr(ridge, name)(config)
        return 0

    return run


def _torchrun_rank() -> int | None:
    """This process's rank when ``torchrun`` started it (world larger than one), else None."""
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"])
    return None


def _fit_distributed(config: RunConfig) -> int:
    """The fit stage on every rank of a ``torchrun`` process group (gloo on CPU, NCCL where
    CUDA is available): subjects and voxel chunks split across ranks, rank 0 writes."""
    from cinebrain.pipelines import ridge
    from cinebrain.train.distributed import barrier, cleanup_distributed, setup_distributed

    info = setup_distributed()
    try:
        if info.is_main:
            print(f"[fit] run folder {config.out} ({info.world_size} ranks)")
        ridge.fit(config)
    except (InputError, ValueError) as e:
        # every rank raises the same failure (the ranks share it before anyone writes);
        # rank 0 says it while the group still stands, and no rank exits before it has:
        # torchrun stops the other workers as soon as one exits with an error
        if info.is_main:
            _say_error(_one_line(e), 0, e)
            e.said = True  # type: ignore[attr-defined]
        barrier()
        raise
    finally:
        cleanup_distributed()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = _stage_config(args, "run")
    from cinebrain.pipelines import ridge

    print(f"run folder {config.out}")
    ridge.run_all(config)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    config = _stage_config(args, "train")
    from cinebrain.pipelines import autoencoder

    autoencoder.check(config)  # a bad preset, modality or shape fails before any work
    print(f"[train] autoencoder in {config.out}")
    autoencoder.train(config, resume=args.resume)
    return 0


def _cmd_videogpt_train(args: argparse.Namespace) -> int:
    config = _stage_config(args, "videogpt-train")
    from cinebrain.pipelines import videogpt

    videogpt.check(config)  # a bad preset or clip shape fails before the movie is read
    print(f"[videogpt train] VQ-VAE and GPT on the study's movie, in {config.out}")
    videogpt.train(config, resume=args.resume)
    return 0


def _cmd_videogpt_evaluate(args: argparse.Namespace) -> int:
    config = _stage_config(args, "videogpt-evaluate")
    from cinebrain.pipelines import videogpt

    videogpt.check(config)
    print(f"[videogpt evaluate] layer features scored by ridge, in {config.out}")
    videogpt.evaluate(config)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    config = _stage_config(args, "sweep")
    from cinebrain.pipelines import sweep

    sweep.check(config)
    print(f"[sweep] {sweep.n_cells(config)} cells in {sweep.sweep_dir(config)}")
    sweep.run(config)
    return 0


def _run_config(run: Path) -> RunConfig:
    from cinebrain.pipelines.runfolder import RunFolder

    folder = RunFolder(run)
    if not folder.config.is_file():
        raise InputError(run, "not a run folder (no config.yaml)",
                         "give the folder a cinebrain stage wrote")
    return load_config(folder.config, {"out": str(run.resolve())})


def _cmd_lesion(args: argparse.Namespace) -> int:
    run = Path(args.run)
    config = _run_config(run)
    from cinebrain.pipelines import autoencoder

    top = None
    if args.top_k_for_roi:
        roi, k = args.top_k_for_roi
        try:
            top = (roi, int(k))
        except ValueError:
            raise InputError("--top-k-for-roi", f"K must be an integer, got {k!r}", "e.g. --top-k-for-roi visual 16") from None
    autoencoder.lesion(config, modalities=args.modalities or (), units=args.units or (), top_k_for_roi=top,
                mode=args.mode, name=args.name)
    return 0


def _cmd_neurons_train(args: argparse.Namespace) -> int:
    from cinebrain.config import load_neuron_config

    config = load_neuron_config(args.config_file, {
        "out": args.out, "progress": False if args.no_progress else None,
        "train.device": args.device})
    set_threads(args.global_threads or config.threads)
    from cinebrain.pipelines import neurons

    print(f"[neurons train] run folder {config.out}")
    neurons.train(config, resume=args.resume)
    if _torchrun_rank() in (None, 0):
        neurons.report(config)
    return 0


def _cmd_neurons_evaluate(args: argparse.Namespace) -> int:
    from cinebrain.config import load_neuron_config
    from cinebrain.pipelines.runfolder import RunFolder

    run = Path(args.run)
    folder = RunFolder(run)
    if not folder.config.is_file():
        raise InputError(run, "not a run folder (no config.yaml)",
                         "give the folder `cinebrain neurons train` wrote")
    config = load_neuron_config(folder.config, {"out": str(run.resolve()),
                                                "train.device": args.device})
    if args.config_file:  # its scores and baseline replace the run's
        from cinebrain.config.neurons import validate_neuron_config

        given = load_neuron_config(args.config_file, {"out": str(run.resolve())})
        config = validate_neuron_config(
            {**config.model_dump(mode="json"), "evaluate": given.evaluate.model_dump(mode="json"),
             "baseline": given.baseline.model_dump(mode="json")}, args.config_file)
    set_threads(args.global_threads or config.threads)
    from cinebrain.pipelines import neurons

    print(f"[neurons evaluate] run folder {config.out}")
    neurons.evaluate(config)
    neurons.report(config)
    return 0


def _cmd_params(args: argparse.Namespace) -> int:
    from cinebrain.models import videogpt, vivit, vqvae

    families = {"vivit": (vivit.PRESETS, lambda n: vivit.parameter_table(
                    n, parallel_block=args.parallel_block)),
                "vqvae": (vqvae.PRESETS, vqvae.parameter_table),
                "videogpt": (videogpt.PRESETS, videogpt.parameter_table)}
    chosen = [args.family] if args.family else list(families)
    names = args.presets or [n for f in chosen for n in families[f][0]]
    for name in dict.fromkeys(names):
        found = [f for f in chosen if name in families[f][0]]
        if not found:
            known = ", ".join(f"{f}: {', '.join(families[f][0])}" for f in chosen)
            raise InputError(name, "not a model preset", f"use one of ({known})")
        for f in found:
            print(f"[{f}] " + families[f][1](name))
    return 0


def _cmd_bench_encoders(args: argparse.Namespace) -> int:
    import torch

    from cinebrain.nn.bench import benchmark_encoders, format_table

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device", "CUDA is not available on this machine", "use --device cpu")
    rows = benchmark_encoders(device=device, batch_size=args.batch_size, dtype=args.dtype,
                              repeats=args.repeats, scale=args.scale, only=args.only or None,
                              backward=not args.forward_only)
    print(format_table(rows))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    run = Path(args.run)
    if (run / "stages" / "neurons-evaluate.json").is_file():  # a neuron run
        from cinebrain.config import load_neuron_config
        from cinebrain.pipelines import neurons

        neurons.report(load_neuron_config(run / "config.yaml", {"out": str(run.resolve())}))
        return 0
    config = _run_config(run)
    from cinebrain.pipelines import ridge

    ridge.report(config)
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from cinebrain.data.simulate import simulate_study

    path = simulate_study(
        args.out, n_subjects=args.subjects, n_runs=args.runs, run_duration=args.run_duration,
        tr=args.tr, voxel_size=args.voxel_size, seed=args.seed, progress=not args.quiet,
    )
    print(path)
    return 0


def _cmd_simulate_neurons(args: argparse.Namespace) -> int:
    from cinebrain.data.simulate.neurons import write_neuron_study

    neurons = args.neurons[0] if len(args.neurons) == 1 else tuple(args.neurons)
    path = write_neuron_study(
        args.out, overwrite=args.overwrite, nwb=args.nwb, seed=args.seed, n_sessions=args.sessions, neurons=neurons,
        n_train=args.train_clips, n_validation=args.validation_clips, n_test=args.test_clips,
        n_repeats=args.repeats, response=args.response, eye_gain=args.eye_gain,
    )
    print(path)
    return 0


def _cmd_study_from_bids(args: argparse.Namespace) -> int:
    import shlex

    from cinebrain.data.confounds import parse_strategy, study_from_bids
    from cinebrain.io.bids import scan_bids

    strategy = parse_strategy(args.strategy)  # a name nilearn refuses fails before any reading
    dataset = scan_bids(args.dir, task=args.task, space=args.space,
                        derivatives=args.derivatives, subjects=args.subjects)
    words = [args.dir, "--space", args.space, "--strategy", args.strategy, "--out", args.out]
    words += ["--task", dataset.task] + (["--derivatives", args.derivatives]
                                         if args.derivatives else [])
    words += ["--subjects", *args.subjects] if args.subjects else []
    command = "cinebrain study from-bids " + " ".join(shlex.quote(str(w)) for w in words)
    path = study_from_bids(dataset, args.out, strategy, command=command,
                           progress=not args.quiet)
    print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from cinebrain.demo import run_demo, run_neuron_demo

    if args.neurons:
        run_neuron_demo(data=args.data or "cinebrain-demo/neurons-demo",
                        out=args.out or "cinebrain-demo/neurons-run", quick=args.quick)
        return 0
    run_demo(data=args.data or "cinebrain-demo/study", out=args.out or "cinebrain-demo/run",
             quick=args.quick)
    return 0


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the full usage is what ``--help`` is for)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cinebrain",
        description="Predict brain activity from naturalistic stimuli: features, voxelwise "
        "encoding models, per-voxel scores against a noise ceiling, brain maps and reports.",
    )
    parser.add_argument("--version", action="version", version=f"cinebrain {__version__}")
    parser.add_argument(
        "--threads", dest="global_threads", type=_threads_arg, metavar="N",
        help="BLAS and torch threads of every command (default: the cores available to the "
        "process, or OMP_NUM_THREADS where set); a run's config key `threads`. Several fits "
        "side by side: --threads 1 each")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="simulate a study (if absent) and run the whole pipeline on it")
    p.add_argument("--data", help="simulated study folder (default cinebrain-demo/study; "
                   "with --neurons cinebrain-demo/neurons-demo)")
    p.add_argument("--out", help="run folder (default cinebrain-demo/run; with --neurons "
                   "cinebrain-demo/neurons-run)")
    p.add_argument("--quick", action="store_true", help="a smaller study (about a minute)")
    p.add_argument("--neurons", action="store_true", help="the neuron family instead: "
                   "simulated V1 neurons during movies, the conv core with readouts, scored "
                   "against the repeats, the baseline and the ground truth")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="write a simulated study with known ground truth")
    p.add_argument("out", help="output folder")
    p.add_argument("--subjects", type=int, default=3, help="number of subjects (default 3)")
    p.add_argument("--runs", type=int, default=3, help="runs per subject (default 3)")
    p.add_argument("--run-duration", type=_positive_float, default=200.0, help="seconds of movie per run")
    p.add_argument("--tr", type=_positive_float, default=1.5, help="repetition time (s)")
    p.add_argument("--voxel-size", type=int, default=4, help="voxel size (mm) of the MNI grid")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("simulate-neurons", help="write a simulated mouse V1 study (Sensorium "
                       "2023 folders) with known receptive fields and behaviour gains")
    p.add_argument("out", help="output folder (must be new or empty)")
    p.add_argument("--sessions", type=int, default=2, help="sessions (mice), default 2")
    p.add_argument("--neurons", type=int, nargs="+", default=[60, 80], metavar="N",
                   help="neurons per session: one count, or one per session (default 60 80)")
    p.add_argument("--train-clips", type=int, default=24, help="training clips (default 24)")
    p.add_argument("--validation-clips", type=int, default=4, help="validation clips (default 4)")
    p.add_argument("--test-clips", type=int, default=3, help="test clips (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="presentations of each test clip (default 10)")
    p.add_argument("--response", choices=["spikes", "calcium"], default="spikes",
                   help="Poisson spike counts, or calcium-like traces (default spikes)")
    p.add_argument("--eye-gain", type=float, default=0.3,
                   help="pixels a receptive field moves per camera pixel of eye movement")
    p.add_argument("--nwb", action="store_true", help="also write <out>/<session>.nwb")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a non-empty OUT (only once the new study is complete)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=_cmd_simulate_neurons)

    p = sub.add_parser("study", help="write a study file from a dataset (study from-bids DIR)")
    study_sub = p.add_subparsers(dest="study_command", required=True, metavar="SOURCE")
    p = study_sub.add_parser(
        "from-bids", help="a BIDS dataset with fMRIPrep derivatives: confounds regressed from "
        "the preprocessed BOLD (nilearn), one brain mask, events.tsv as annotations")
    p.add_argument("dir", help="the BIDS dataset's root folder")
    p.add_argument("--task", help="task to read (default: the only one)")
    p.add_argument("--space", default="MNI152NLin2009cAsym",
                   help="fMRIPrep output space (default MNI152NLin2009cAsym)")
    p.add_argument("--derivatives", help="fMRIPrep folder (default DIR/derivatives/fmriprep)")
    p.add_argument("--strategy", default="simple",
                   help="nilearn confound strategy: a preset of load_confounds_strategy "
                   "(simple, scrubbing, compcor, ica_aroma) or load_confounds components "
                   "separated by commas, e.g. motion,wm_csf,high_pass (default simple)")
    p.add_argument("--subjects", nargs="*", help="subject labels (01 or sub-01; default: all)")
    p.add_argument("--out", default="study.yaml",
                   help="study file to write; cleaned BOLD and the mask go beside it "
                   "(default study.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_study_from_bids)

    for name, help_ in [
        ("features", "extract feature spaces from the study's stimulus"),
        ("fit", "fit per-subject encoding models on training runs, predict held-out runs"),
        ("evaluate", "per-voxel scores, noise ceilings, significance, variance partitioning"),
    ]:
        p = sub.add_parser(name, help=help_)
        _add_config_options(p)
        p.set_defaults(func=_stage(name))

    p = sub.add_parser("run", help="features, fit, evaluate and report in one go")
    _add_config_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "train", help="train the multimodal autoencoder on the run's features and responses; "
        "compare it with ridge on the same held-out runs",
    )
    _add_config_options(p)
    p.add_argument("--resume", action="store_true", help="continue from autoencoder/checkpoints/last.pt")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("videogpt", help="self-supervised video features: a VQ-VAE and a "
                       "VideoGPT trained on the study's movie, their layers scored by ridge")
    video_sub = p.add_subparsers(dest="videogpt_command", required=True, metavar="ACTION")
    p = video_sub.add_parser(
        "train", help="train the VQ-VAE, then the GPT (next clip from the previous one, the "
        "VQ-VAE frozen) on the movie of the training runs; held-out PSNR, code usage and "
        "cross-entropy; sample clips as mp4")
    _add_config_options(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from videogpt/{vqvae,gpt}/checkpoints/last.pt")
    p.set_defaults(func=_cmd_videogpt_train)
    p = video_sub.add_parser(
        "evaluate", help="each GPT layer's activations over the movie as a feature space, ridge "
        "per layer on the training runs, held-out r per voxel and region; against the same "
        "architecture with random weights")
    _add_config_options(p)
    p.set_defaults(func=_cmd_videogpt_evaluate)

    p = sub.add_parser(
        "sweep", help="a scaling study: a grid over the videogpt options (data fraction, "
        "hidden size, layers, heads, precision); each cell trains, extracts, fits and scores; "
        "finished cells are skipped; results.csv and scaling plots")
    _add_config_options(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("lesion", help="in-silico lesion of a trained autoencoder: NIfTI maps of the "
                       "change in predicted responses, reconstruction loss per modality")
    p.add_argument("run", help="run folder with a trained autoencoder")
    p.add_argument("--modalities", nargs="*", choices=["video", "audio", "text"],
                   help="modalities removed from the combiner")
    p.add_argument("--units", nargs="*", type=int, help="bottleneck units to ablate")
    p.add_argument("--top-k-for-roi", nargs=2, metavar=("ROI", "K"),
                   help="also ablate the K units that most drive a region's voxels (ground-truth "
                   "regions of a simulated study, or evaluate.roi_labels names)")
    p.add_argument("--mode", choices=["zero", "mean"], default="zero",
                   help="ablated units are set to 0 or to their training mean (default zero)")
    p.add_argument("--name", help="lesion folder name (default: from the lesion)")
    p.set_defaults(func=_cmd_lesion)

    p = sub.add_parser("neurons", help="neuron recordings (Sensorium, NWB, .npz/.h5): train a "
                       "core + readout model, score it per neuron beside a frame-ridge baseline")
    neurons_sub = p.add_subparsers(dest="neurons_command", required=True, metavar="ACTION")
    p = neurons_sub.add_parser(
        "train", help="train on the sessions of a neuron run config, then score the test trials "
        "(single-trial r, correlation to average, oracle, FEVE, CCnorm, bits/spike, behaviour "
        "shuffle) beside the frame-ridge baseline")
    p.add_argument("config_file", metavar="CONFIG",
                   help="YAML neuron run config (keys: cinebrain.config.neurons.NeuronRunConfig)")
    p.add_argument("--out", help="run folder (default: the config's out)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's neurons/checkpoints/last.pt")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="training device "
                   "(default: the config's train.device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_neurons_train)
    p = neurons_sub.add_parser("evaluate", help="score a trained neuron run's test trials again "
                               "(after changing its evaluate or baseline options)")
    p.add_argument("run", help="run folder written by `cinebrain neurons train`")
    p.add_argument("--config", dest="config_file", metavar="CONFIG",
                   help="a neuron run config whose evaluate and baseline sections replace the "
                   "run's (its other sections are ignored)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="prediction device "
                   "(default: the run's train.device)")
    p.set_defaults(func=_cmd_neurons_evaluate)

    p = sub.add_parser("params", help="parameters per module of the model presets (ViViT "
                       "cores, VQ-VAE, VideoGPT), counted on the meta device")
    p.add_argument("presets", nargs="*", help="preset names, e.g. vivit-small, vivit-baseline, "
                   "vqvae-tiny, videogpt-tiny, seed-004 (default: every preset)")
    p.add_argument("--family", choices=["vivit", "vqvae", "videogpt"],
                   help="only this model family's presets")
    p.add_argument("--parallel-block", action="store_true",
                   help="attention and feed-forward side by side")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("bench-encoders", help="time, peak memory and throughput of every encoder "
                       "and fusion method on this device")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per step (default 8)")
    p.add_argument("--scale", choices=["tiny", "small", "base"], default="small", help="module sizes")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="float32, or autocast to bfloat16 / float16")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    p.add_argument("--only", nargs="*", help="module names or prefixes to run")
    p.add_argument("--forward-only", action="store_true", help="no backward pass")
    p.set_defaults(func=_cmd_bench_encoders)

    p = sub.add_parser("report", help="brain maps, figures and report.html for a run folder")
    p.add_argument("run", help="run folder")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = _torchrun_rank()
    if rank:  # under torchrun only rank 0 speaks (a rank's own failure is still said)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's lifetime)
    try:
        if not hasattr(args, "config"):  # commands with a run config set it from the config
            set_threads(args.global_threads)
        return int(args.func(args) or 0)
    except (InputError, ValueError) as e:
        # a ValueError is a value the user chose that the library cannot work with (e.g.
        # too few TRs for the folds): one line, like every other user error
        _say_error(_one_line(e), rank, e)
        return 2
    except KeyboardInterrupt:
        print("cinebrain: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return str(e) if isinstance(e, InputError) else " ".join(str(e).split())


def _say_error(message: str, rank: int | None, e: BaseException) -> None:
    """The one-line error, said once; under torchrun a rank other than 0 says only its own
    failure (rank 0 says every rank's), prefixed with its rank."""
    if getattr(e, "said", False):
        return
    if not rank:
        print(f"cinebrain: error: {message}", file=sys.stderr)
    elif getattr(e, "from_rank", rank) == rank:
        print(f"cinebrain (rank {rank}): error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
