NAME = "run"
HELP = "one supervised RLlib trial"


def uses_ray(args) -> bool:
    return True


def add_arguments(p) -> None:
    from supervisor.commands import number

    p.add_argument("experiment", help="experiment YAML file")
    p.add_argument("--iterations", type=number(int, gt=0), help="stop after N iterations (overrides stop.iterations)")
    p.add_argument("--out", help="run folder (default runs/<name>-<timestamp>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a dotted key")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--storage", metavar="URI",
                   help="where checkpoints, TensorBoard files and store snapshots are kept: a folder, a shared "
                        "path or a URI (s3://bucket/prefix, gs://...); the run's files go to URI/<run folder's "
                        "name>/ (default: the run folder itself; overrides storage: in the file)")
    p.add_argument("--quiet", action="store_true", help="no per-iteration progress")
    p.add_argument("--restore", metavar="PATH",
                   help="start from a checkpoint: RUN_DIR/best, a run folder (its best checkpoint) or any checkpoint folder")
    p.add_argument("--no-tensorboard", action="store_true", dest="no_tensorboard",
                   help="no TensorBoard event files (same as --set supervisor.tensorboard=false)")


def run(args) -> int:
    from supervisor.config import blame_set_key, load_experiment, with_storage
    from supervisor.errors import InputError

    sets = list(args.set)
    if args.iterations is not None:
        if args.iterations <= 0:
            raise InputError("--iterations", None, f"must be > 0 (got {args.iterations})")
        sets.append(f"stop.iterations={args.iterations}")
    if getattr(args, "no_tensorboard", False):
        sets.append("supervisor.tensorboard=false")
    exp = with_storage(load_experiment(args.experiment, sets), args.storage)
    from actors.run import run_experiment  # Ray is imported only once the input is known to be good

    try:
        return run_experiment(exp, args.experiment, args.out, args.address, args.quiet, args.restore)
    except InputError as e:  # a config key RLlib refuses: --set's when --set gave it
        raise blame_set_key(e, args.experiment, sets) from None
