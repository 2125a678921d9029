"""The `keras-compress` command."""

import argparse
import sys


def _demo(args):
    from keras_compress import demo

    log = (lambda *a, **k: None) if args.quiet else print
    if args.quick:
        args.max_train = args.max_train or 6000
        args.max_test = args.max_test or 2000
        args.epochs = min(args.epochs, 2)
        args.finetune_epochs = min(args.finetune_epochs, 2)
        args.latency_runs = min(args.latency_runs, 100)
    rows = demo.run_demo(
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        max_train=args.max_train,
        max_test=args.max_test,
        sparsity=args.sparsity,
        seed=args.seed,
        latency_runs=args.latency_runs,
        output_dir=args.output,
        data_dir=args.data_dir,
        log=log,
    )
    print()
    print(demo.format_table(rows))
    if args.output:
        print(f"\nFiles and report.json written to {args.output}")
    return 0


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _sparsity(text):
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def build_parser():
    """The argument parser of `keras-compress`."""
    from keras_compress import __version__

    parser = argparse.ArgumentParser(
        prog="keras-compress",
        description="Model optimization for Keras 3: prune, quantize, "
        "convert to LiteRT and verify.",
    )
    parser.add_argument("--version", action="version",
                        version=f"keras-compress {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="train the reference CNN, compress it every way, verify the "
        "LiteRT files and print a table",
        description="Trains the reference CNN on Fashion-MNIST (Debian "
        "package dataset-fashion-mnist; falls back to scikit-learn's digits "
        "or synthetic images), prunes and quantizes it, converts each "
        "variant to LiteRT, runs the files and prints accuracy, size and "
        "latency.",
    )
    demo.add_argument("--epochs", type=_positive_int, default=3,
                      help="baseline training epochs (default 3)")
    demo.add_argument("--finetune-epochs", type=_positive_int, default=2,
                      help="fine-tuning epochs per pruned variant (default 2)")
    demo.add_argument("--max-train", type=_positive_int, default=None,
                      help="use at most N training images")
    demo.add_argument("--max-test", type=_positive_int, default=None,
                      help="evaluate on at most N test images")
    demo.add_argument("--sparsity", type=_sparsity, default=0.8,
                      help="final sparsity of magnitude pruning (default 0.8)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--latency-runs", type=_positive_int, default=300,
                      help="single-image invocations timed per file")
    demo.add_argument("--data-dir", default=None,
                      help="folder with the Fashion-MNIST IDX .gz files")
    demo.add_argument("-o", "--output", default=None,
                      help="write the .tflite files and report.json here")
    demo.add_argument("--quick", action="store_true",
                      help="small subset and fewer epochs (about a minute)")
    demo.add_argument("-q", "--quiet", action="store_true",
                      help="print only the table")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv=None):
    """Entry point of the `keras-compress` console script."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
