"""``supervise sweep SWEEP.yaml``: a Ray Tune sweep of PPO trials, every trial supervised.

Failing trials are stopped (``StabilityStopper``) or restarted from their last
healthy checkpoint through Tune (``FailureConfig``). Exit codes: 0 the sweep
finished, 3 the supervisor stopped every trial, 1 any other failure (a trial
errored, Tune failed), 2 bad input.
"""

NAME = "sweep"
HELP = "a Ray Tune sweep, every trial supervised"


def uses_ray(args) -> bool:
    return True


def add_arguments(p) -> None:
    from supervisor.commands import number

    p.add_argument("sweep", help="sweep YAML file (an experiment file plus search:, num_samples, scheduler)")
    p.add_argument("--out", help="run folder (default runs/<name>-<timestamp>/)")
    p.add_argument("--max-concurrent", type=number(int, gt=0), dest="max_concurrent",
                   help="at most N trials at once (overrides max_concurrent in the file)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--storage", metavar="URI",
                   help="where checkpoints, TensorBoard files and store snapshots are kept: a folder, a shared "
                        "path or a URI (s3://bucket/prefix, gs://...); the run's files go to URI/<run folder's "
                        "name>/ (default: the run folder itself; overrides storage: in the file)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    p.add_argument("--no-tensorboard", action="store_true", dest="no_tensorboard",
                   help="no TensorBoard event files (same as --set supervisor.tensorboard=false)")


def run(args) -> int:
    from supervisor.config import blame_set_key, load_sweep, with_storage
    from supervisor.errors import InputError

    if args.max_concurrent is not None and args.max_concurrent <= 0:
        raise InputError("--max-concurrent", None, f"must be > 0 (got {args.max_concurrent})")
    sets = list(args.set) + (["supervisor.tensorboard=false"] if args.no_tensorboard else [])
    sweep = with_storage(load_sweep(args.sweep, sets), args.storage)
    from actors.tune import run_sweep  # Ray is imported only once the input is known to be good

    try:
        return run_sweep(sweep, args.sweep, args.out, args.max_concurrent, args.address, args.quiet)
    except InputError as e:  # a config key RLlib refuses: --set's when --set gave it
        raise blame_set_key(e, args.sweep, sets) from None
