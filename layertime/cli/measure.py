"""The commands that measure or count: ``profile``, ``sweep``, ``bench-layers``, ``cost``
and ``calibrate``.  Each is flags, then one library call, then a renderer."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from layertime.cli.common import (
    check_report_paths,
    compile_options,
    console,
    measure_options,
    open_store,
    progress,
    stored_config,
    sweep_progress,
    oom_with_hint,
    wrote,
    table_width,
    workload_of,
    write_json,
    write_reports,
)
from layertime.cli.parser import EXIT_USAGE
from layertime.errors import BadValue, LayertimeError, OutOfMemory

if TYPE_CHECKING:
    from layertime.results.cost.estimate import CostResult
    from layertime.results.run import Run
    from layertime.workload.sharding import ShardingSpec


def cmd_profile(args: argparse.Namespace, argv: list[str]) -> int:
    """``argv`` is the whole command line: ``--nproc`` starts ranks that run it again."""
    from layertime.measure.runner import profile_workload
    from layertime.render.table import render

    check_report_paths(args)
    compiled = compile_options(args)
    if compiled is not None and (args.ddp or args.nproc):
        print("layertime: error: --compile cannot be combined with --ddp/--nproc yet",
              file=sys.stderr)
        return EXIT_USAGE
    sharding = _sharding(args)
    if args.nproc:
        if sharding is not None:
            _check_sharding(args, sharding)
        return _launch_ranks(args, argv)
    workload = workload_of(args)
    cost = _profile_cost(args, workload)  # before measuring: a bad profile name fails at once
    with progress(not args.quiet and sys.stderr.isatty()) as on_progress:
        try:
            if sharding is not None:  # one rank of a sharded run
                from layertime.measure.parallel.sharded import profile_sharded_workload

                run = profile_sharded_workload(
                    workload, sharding, measure_options(args), backend=args.backend,
                    timeout_s=args.ddp_timeout, on_progress=on_progress)
            elif args.ddp:  # one rank of a data-parallel run
                from layertime.measure.parallel.ddp import profile_ddp_workload

                run = profile_ddp_workload(workload, measure_options(args), backend=args.backend,
                                           timeout_s=args.ddp_timeout, on_progress=on_progress)
            else:
                run = profile_workload(workload, measure_options(args), on_progress=on_progress,
                                       compile=compiled)
        except OutOfMemory as e:
            raise oom_with_hint(e, workload, args.db) from e
    if run is None:  # a rank other than 0: rank 0 reports for all
        from layertime.measure.parallel.health import wait_for_rank0

        wait_for_rank0()  # exit only once rank 0's outputs are written (--nproc)
        return 0
    joined = None
    if cost is not None:
        from layertime.cost.compare import with_prediction
        from layertime.cost.devices import find_profile

        device = find_profile(args.predict, args.profiles) if args.predict else None
        run, cost, joined = with_prediction(run, cost, device)
    if args.json:
        run.save(args.json)
        wrote(args, args.json)
    if args.quiet:
        print(run.headline())
        if joined is not None:
            print(joined.headline())
    else:
        console(args).print(render(run, table_width(args)))
        if joined is not None:
            from layertime.render.cost.predict import render as render_joined

            console(args).print(render_joined(joined, table_width(args)))
    if not args.no_store:
        _store_run(args, "profile", run.to_dict(), run.model, run.batch_size, run.device,
                   workload)
    write_reports(args, run, cost=cost)
    if args.ddp or sharding is not None:
        from layertime.measure.parallel.health import mark_done

        mark_done(0)
    return 0


def _sharding(args: argparse.Namespace) -> ShardingSpec | None:
    """``--fsdp``/``--tp K``/``--reshard-after-forward`` as a spec (None: not sharded)."""
    tp = args.tp or 1
    if not args.fsdp and tp == 1:
        if not args.reshard_after_forward:
            raise BadValue("--no-reshard-after-forward needs --fsdp")
        return None
    if args.ddp:
        raise BadValue("--ddp is DistributedDataParallel; --fsdp/--tp shard the model instead: "
                       "use one of them")
    if args.compile or args.compile_mode:
        raise BadValue("--compile cannot be combined with --fsdp/--tp yet")
    if not args.fsdp and not args.reshard_after_forward:
        raise BadValue("--no-reshard-after-forward needs --fsdp")
    from layertime.workload.sharding import ShardingSpec

    try:
        return ShardingSpec(fsdp=args.fsdp, tp=tp,
                            reshard_after_forward=args.reshard_after_forward)
    except LayertimeError as e:
        raise BadValue(str(e)) from e


def _check_sharding(args: argparse.Namespace, sharding: ShardingSpec) -> None:
    """Before starting ranks: the mesh fits ``--nproc``, and a ``--tp`` plan exists (on the
    meta device, no weights), so a bad layout is one line, not N ranks failing."""
    try:
        sharding.mesh(args.nproc)
    except LayertimeError as e:
        raise BadValue(f"{e} (--nproc {args.nproc})") from e
    if sharding.tp > 1:
        import torch

        from layertime.models import resolve
        from layertime.workload.sharding import tp_plan

        workload = workload_of(args)
        assert not isinstance(workload.model, torch.nn.Module)  # the CLI names models
        spec = resolve(workload.model)
        with torch.device("meta"):
            model = spec.build(workload.num_classes or 1000)
        try:
            tp_plan(model, sharding.tp, spec.name)
        except LayertimeError as e:
            raise BadValue(str(e)) from e


def _profile_cost(args: argparse.Namespace, workload: Any) -> CostResult | None:
    """``profile --predict NAME`` / ``--cost``: the cost estimate of the same workload."""
    if args.profiles and not args.predict:
        raise BadValue("--profiles needs --predict PROFILE")
    if not (args.predict or args.cost):
        return None
    from layertime.cost import estimate_workload, predict
    from layertime.cost.devices import find_profile

    from layertime.cost import target_of_profile

    device = find_profile(args.predict, args.profiles) if args.predict else None
    # The kernels of the predicted device are counted (its SDPA backend, its optimizer).
    cost = estimate_workload(
        workload, kernel_target=target_of_profile(device) if device is not None else None)
    return predict(cost, device) if device is not None else cost


def _store_run(args: argparse.Namespace, kind: str, result: dict[str, Any], model: str,
               batch_size: int, device: str | None, workload: Any, *,
               announce: bool = True) -> int:
    """Keep a finished run in the store (with its flags and workload)."""
    with open_store(args.db) as store:
        rid = store.add(kind, model=model, config=stored_config(args, workload), result=result,
                        batch_size=batch_size, device=device)
    if announce and not getattr(args, "quiet", False):
        print(f"stored as run {rid} in {store.path}", file=sys.stderr)
    return rid


def _launch_ranks(args: argparse.Namespace, argv: list[str]) -> int:
    from layertime.measure.parallel.launch import launch, worker_argv

    out = launch(args.nproc, worker_argv(argv))
    if out.returncode == 0:
        sys.stderr.write(out.log)
        if out.warning:
            print(f"layertime: warning: {out.warning}", file=sys.stderr)
        return 0
    if args.debug:
        sys.stderr.write(out.log)
    print(f"layertime: error: {out.error}", file=sys.stderr)
    return out.returncode


def cmd_sweep(args: argparse.Namespace) -> int:
    from layertime.render.compare import sweep_table
    from layertime.sweep import SweepAxes, parse_axis, run_sweep

    axes = SweepAxes(
        models=parse_axis(args.models, "models", kind=str),
        batch_sizes=parse_axis(args.batch_sizes, "batch-sizes"),
        image_sizes=parse_axis(args.image_sizes, "image-sizes") if args.image_sizes else (None,),
        seq_lens=parse_axis(args.seq_lens, "seq-lens") if args.seq_lens else (None,),
        model_config=tuple(args.config),
        devices=parse_axis(args.devices, "devices", kind=str),
        dtypes=parse_axis(args.dtypes, "dtypes", kind=str),
        optimizers=parse_axis(args.optimizers, "optimizers", kind=str),
        steps=args.steps,
        warmup_steps=args.warmup,
    )
    check_report_paths(args)
    with open_store(args.db) as store, sweep_progress(sys.stderr.isatty()) as on_progress:
        result = run_sweep(axes, store, force=args.force, on_progress=on_progress)
    console(args).print(sweep_table(result, table_width(args)))
    if args.json:
        write_json(args, args.json, result.summary())
    write_reports(args, result.summarised(), title=f"sweep {result.sweep_id}")
    if result.sweep_id is not None:
        measured = sum(1 for p in result.points if p.status == "ok")
        print(f"stored as sweep {result.sweep_id} in {store.path} ({len(result.points)} "
              f"configurations, {measured} measured now); layertime report {result.sweep_id} "
              "--html FILE draws it", file=sys.stderr)
    return 0


def cmd_bench_layers(args: argparse.Namespace) -> int:
    from layertime.measure.isolated import bench_workload
    from layertime.measure.runner import MeasureOptions, profile_workload
    from layertime.render.bench_table import bench_table

    workload = workload_of(args)
    with progress(sys.stderr.isatty()) as on_progress:
        result = bench_workload(
            workload,
            warmup=args.warmup,
            repeats=args.repeats,
            on_progress=lambda done, total, name: on_progress("layers alone", done, total),
        )
        if not args.no_compare:
            situ = profile_workload(workload, MeasureOptions(steps=args.steps),
                                    on_progress=on_progress)
            result = replace(result, in_situ=situ)
    console(args).print(bench_table(result, result.in_situ, table_width(args)))
    data = result.to_dict()
    if args.json:
        write_json(args, args.json, data)
    if not args.no_store:
        _store_run(args, "bench-layers", data, result.model, result.batch_size, result.device,
                   workload)
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from layertime.cost import MathMode, estimate_with_model, predict
    from layertime.cost.devices import find_profile
    from layertime.render.cost.table import render

    check_report_paths(args)
    if args.profiles and not args.device_profile:
        raise BadValue("--profiles needs --device-profile NAME to choose one")
    run = _what_if_run(args)
    sharding, world = _sharding_of(args, run)
    if sharding is not None:
        _given_link(args, run)  # a bad link fails before anything is counted
    profile = find_profile(args.device_profile, args.profiles) if args.device_profile else None
    workload = _cost_workload(args, run)
    from layertime.cost import target_of_profile

    cost, model = estimate_with_model(
        workload, frozen=args.freeze,
        kernel_target=target_of_profile(profile) if profile is not None else None)
    if profile is not None:
        tf32 = {"torch": MathMode(), "on": MathMode(True, True), "off": MathMode(False, False)}
        cost = predict(cost, profile, mode=tf32[args.tf32])
    if args.json:
        cost.save(args.json)
        wrote(args, args.json)
    if args.quiet:
        print(cost.headline())
    else:
        console(args).print(render(cost, table_width(args)))
    write_reports(args, cost)
    if run is not None and not args.quiet:
        _memory_beside(args, run, cost)
    if sharding is not None:
        _sharded_what_if(args, cost, model, sharding, world, profile, run)
    elif args.workers or (run is not None and (run.link is not None or args.link_gbps
                                               or run.world_size > 1)):
        _comm_what_if(args, cost, run)
    if not args.no_store:
        _store_run(args, "cost", cost.to_dict(), cost.model, cost.batch_size,
                   args.device_profile, workload)
    return 0


def _memory_beside(args: argparse.Namespace, run: Run, cost: CostResult) -> None:
    """``cost --run RUN.json``: the run's measured memory per layer beside the count."""
    from layertime.render.memory import beside_table, has_memory
    from layertime.results.memory import beside

    if not has_memory(run):
        return
    _warn_run_differs(run, cost)
    rows = beside(run.layers, cost.layers, (
        run.memory.loss_saved_bytes if run.memory is not None else None,
        cost.loss.memory_bytes.saved_activations))
    console(args).print(beside_table(rows, table_width(args)))


def _what_if_run(args: argparse.Namespace) -> Run | None:
    """``cost --run RUN.json``: the measured run of the what-if (MODEL defaults to its)."""
    if not args.run:
        if args.model is None:
            raise BadValue("give MODEL (or --run RUN.json for a what-if of a measured run)")
        return None
    from layertime.results.run import Run

    return Run.load(args.run)


def _cost_workload(args: argparse.Namespace, run: Run | None) -> Any:
    """The workload to count: the flags', or with ``--run`` and no MODEL the run's own
    (model, batch size, sequence length or input shape, dtype, optimizer)."""
    if args.model is not None or run is None:
        return workload_of(args)
    from layertime.models import ModelRef
    from layertime.workload import WorkloadSpec

    tokens = run.seq_len is not None
    return WorkloadSpec.create(
        ModelRef(run.model, tuple(args.config)), batch_size=run.batch_size,
        seq_len=run.seq_len, input_shape=None if tokens else tuple(run.input_shape) or None,
        num_classes=run.num_classes or args.num_classes, dtype=run.dtype,
        optimizer=run.optimizer)


def _sharding_of(args: argparse.Namespace, run: Run | None) -> tuple[Any, int]:
    """(the ShardingSpec, the world size) of ``--fsdp/--tp K --nproc N``, or (None, 0) for
    no sharded what-if; a bad combination is one line (exit 2)."""
    if args.nproc and args.workers and args.nproc != args.workers:
        raise BadValue(f"--nproc {args.nproc} and --workers {args.workers} are the same "
                       "thing: give one")
    if args.nproc and not args.workers:
        args.workers = args.nproc  # without --fsdp/--tp: DDP's what-if, as profile --nproc
    from layertime.cost.sharded import sharding_of_run
    from layertime.workload.sharding import ShardingSpec

    measured = sharding_of_run(run) if run is not None else None
    if not (args.fsdp or args.tp):
        if measured is None:  # DDP's what-if, or none
            if not args.reshard_after_forward:
                raise BadValue("--no-reshard-after-forward needs --fsdp")
            return None, 0
        spec = measured  # a sharded run: its own layout, unless flags give another
        if not args.reshard_after_forward:
            spec = ShardingSpec(spec.fsdp, spec.tp, reshard_after_forward=False)
    else:
        spec = ShardingSpec(fsdp=args.fsdp, tp=args.tp or 1,
                            reshard_after_forward=args.reshard_after_forward)
    if args.bucket_cap_mb != 25.0:
        raise BadValue("--bucket-cap-mb is DDP's: FSDP and TP have no gradient buckets")
    world = args.workers
    if world is None and run is not None and run.world_size > 1:
        world = run.world_size
    if world is None:
        if spec.fsdp:
            raise BadValue("--fsdp needs --nproc N, the number of ranks")
        world = spec.tp
    spec.mesh(world)  # N must be K x M: one line, before anything is counted
    return spec, world


def _sharded_what_if(args: argparse.Namespace, cost: CostResult, model: Any, sharding: Any,
                     world: int, profile: Any, run: Run | None) -> None:
    from layertime.cost.sharded import from_cost, from_run_model, links
    from layertime.render.cost.sharded import render as render_sharded

    dp_link, tp_link, notes = links(_given_link(args, run), device=profile, run=run,
                                    fsdp=sharding.fsdp, tp=sharding.tp)
    if run is not None:
        _warn_run_differs(run, cost)
        pred = from_run_model(run, cost, model, sharding, world, dp_link=dp_link,
                              tp_link=tp_link, notes=notes)
    else:
        pred = from_cost(cost, model, sharding, world, dp_link=dp_link, tp_link=tp_link,
                         notes=notes)
    if args.comm_json:
        write_json(args, args.comm_json, pred.to_dict())
    if args.quiet:
        print(pred.headline())
    else:
        console(args).print(render_sharded(pred, table_width(args)))


def _given_link(args: argparse.Namespace, run: Run | None, source: str = "--link-gbps") -> Any:
    """``--link-gbps`` and ``--link-latency-us`` (default: the run's measured latency, else
    5 µs) as a Link, or None."""
    from layertime.results.parallel.comm import DEFAULT_LATENCY_US, Link

    if args.link_latency_us is not None and not args.link_gbps:
        raise BadValue("--link-latency-us needs --link-gbps")
    if not args.link_gbps:
        return None
    latency = args.link_latency_us
    if latency is None:
        latency = run.link.latency_us if run is not None and run.link else DEFAULT_LATENCY_US
    return Link(args.link_gbps, latency, source)


def _warn_run_differs(run: Run, cost: CostResult) -> None:
    for what, measured, counted in (("model", run.model, cost.model),
                                    ("batch size", run.batch_size, cost.batch_size),
                                    ("sequence length", run.seq_len, cost.seq_len)):
        if measured != counted:
            print(f"warning: the run was measured with {what} {measured}, the estimate "
                  f"above is for {counted}: the what-if below uses the run's", file=sys.stderr)


def _comm_what_if(args: argparse.Namespace, cost: CostResult, run: Run | None) -> None:
    from layertime.cost.comm import from_cost, from_run
    from layertime.render.parallel.comm import render as render_comm
    link = _given_link(args, run, source="given")
    caps = {"cap_bytes": int(args.bucket_cap_mb * 2**20)}
    if run is not None:
        _warn_run_differs(run, cost)
        pred = from_run(run, args.workers, link, **caps)
    else:
        if link is None:
            raise LayertimeError("give --link-gbps G (and --workers N) for the what-if")
        pred = from_cost(cost, args.workers, link, **caps)
    if args.comm_json:
        write_json(args, args.comm_json, pred.to_dict())
    if args.quiet:
        print(pred.headline())
    else:
        console(args).print(render_comm(pred, table_width(args)))


def cmd_calibrate(args: argparse.Namespace) -> int:
    from layertime.cost import calibrate as fitting
    from layertime.cost.profile_file import check_profile_file, save_profile
    from layertime.measure import calibrate as measuring
    from layertime.render.cost.predict import calibration_report
    from layertime.workload import resolve_device

    if args.json:
        from layertime.render.output import check_output

        check_output(args.json)
    if not 0 <= args.min_share < 1:
        raise BadValue(f"--min-share must be in [0, 1), not {args.min_share}")
    path = check_profile_file(args.out)
    device = resolve_device(args.device)
    workload = workload_of(args, model=args.fit) if args.fit else None
    if args.fit:
        from layertime.models import resolve

        resolve(args.fit)  # an unknown name fails before any measuring
    name = args.name or measuring.default_name(device)
    run = _run_to_fit(args)
    with progress(sys.stderr.isatty()) as on_progress:
        cal = measuring.calibrate(device, matmul_size=args.matmul_size, memory_mb=args.memory_mb,
                                  repeats=args.repeats, grid=not args.no_grid,
                                  on_progress=lambda what: on_progress(what, 0, 1))
        if workload is not None and run is None:
            from layertime.measure.runner import MeasureOptions, profile_workload

            run = profile_workload(
                replace(workload, device=str(device)),
                MeasureOptions(steps=args.steps, warmup_steps=args.warmup),
                on_progress=on_progress)
            if not args.no_store:
                _store_run(args, "profile", run.to_dict(), run.model, run.batch_size,
                           run.device, workload)
    fit, warnings = None, list[str]()
    if run is not None:
        prof, fit, warnings = fitting.fit_to_run(cal, name, run, model=args.fit,
                                                 min_share=args.min_share)
    else:
        prof = fitting.to_profile(cal, name)
    written = save_profile(prof, path, fit, comment=f"written by layertime calibrate "
                           f"{cal.created}: measured on this machine, not a datasheet")
    from layertime.cost.devices import user_profiles_path

    default_file = Path(written).resolve() == user_profiles_path().resolve()
    console(args).print(calibration_report(cal, fit, warnings, name, written, table_width(args),
                                           default_file),
                        soft_wrap=True)
    if args.json:
        write_json(args, args.json, {"calibration": cal.to_dict(), "profile": name,
                               "path": str(written),
                               "fit": fit.to_dict() if fit is not None else None})
    return 0


def _run_to_fit(args: argparse.Namespace) -> Run | None:
    """``calibrate --from-run ID|RUN.json``: the profile to fit to, checked against --fit."""
    if not args.from_run:
        return None
    from layertime.results.run import Run

    if args.from_run.isdigit():
        with open_store(args.db) as store:
            stored = store.get(int(args.from_run))
        if stored.kind != "profile" or not stored.result:
            raise LayertimeError(f"run {stored.id} is a {stored.kind} run "
                                 f"({stored.status}), not a finished profile")
        run = Run.from_dict(stored.result)
    else:
        run = Run.load(args.from_run)
    if args.fit and args.fit != run.model:
        raise LayertimeError(f"the run is of {run.model}, not {args.fit}")
    return run
