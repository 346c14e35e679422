"""`sapiens2 export MODEL --format onnx|pt2 [--dtype fp32|fp16|int8] [--input-size HxW] [--dynamic-batch]
[--aoti] --out FILE`: a task network or the person detector as an ONNX file, a torch.export program or an
AOTInductor package.

Building the parser imports neither torch nor onnx; running the command does.
"""

from __future__ import annotations

import argparse
import sys
import time

from sapiens2.option_types import height_width

FORMATS = ("onnx", "pt2")
DTYPES = ("fp32", "fp16", "int8")  # sapiens2.export.trace.EXPORT_DTYPES, without importing torch to list them


def add_export_parser(subparsers) -> argparse.ArgumentParser:  # noqa: ANN001 - argparse's private type
    """Register the `export` sub-command on an argparse sub-parsers object."""
    p = subparsers.add_parser("export", help="export a model to ONNX or a torch.export program (fp32, fp16, int8)",
                              description=__doc__)
    p.add_argument("model", metavar="MODEL", help="official name (sapiens2-seg-0.4b, rtmdet-m-person), hub id or file")
    p.add_argument("--format", choices=FORMATS, required=True,
                   help="onnx (onnxruntime, TensorRT, mobile runtimes) or pt2 (a torch.export program)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="fp32 (default); fp16 for GPUs; int8 (onnx only): dynamic int8 matmuls for CPUs, "
                        "per-channel weights, per-token activation ranges")
    p.add_argument("--input-size", type=height_width, metavar="HxW",
                   help="the fixed input size (default: 1024x768; the detector: 640x640)")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (default: batch 1)")
    p.add_argument("--aoti", action="store_true",
                   help="pt2 only: compile ahead of time with AOTInductor into machine code for this kind of CPU "
                        "(needs a C++ compiler, takes minutes; loads only with --allow-code)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (.onnx or .pt2)")
    p.add_argument("--keep-fp32", action="append", metavar="PATTERN",
                   help="int8: also keep Linear layers whose name matches this fnmatch pattern in float32 "
                        "(repeatable; always kept: every *.ffn.w3 and blocks 0-3's ffn.w12)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's current one)")
    p.add_argument("--allow-pickle", action="store_true", help="read .pth/.bin checkpoints (weights only)")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    """Run the `export` command; returns the process exit code."""
    from sapiens2.checkpoint import CheckpointError
    from sapiens2.export import DEFAULT_KEEP, export_onnx, export_pt2
    from sapiens2.export.source import default_input_size, load_source

    suffix = "." + args.format
    if not args.out.lower().endswith(suffix):
        print(f"sapiens2 export: --out {args.out}: a --format {args.format} file must end in {suffix}", file=sys.stderr)
        return 2
    if args.aoti and args.format != "pt2":
        print("sapiens2 export: --aoti is offered for --format pt2 only", file=sys.stderr)
        return 2
    if args.dtype == "int8" and args.format != "onnx":
        print("sapiens2 export: --dtype int8 is offered for --format onnx only", file=sys.stderr)
        return 2
    try:
        network = load_source(args.model, allow_pickle=args.allow_pickle)
        size = args.input_size or default_input_size(network)
        start = time.perf_counter()
        if args.format == "onnx":
            keep = tuple(DEFAULT_KEEP) + tuple(args.keep_fp32 or ())
            out = export_onnx(network, args.out, size, dtype=args.dtype, dynamic_batch=args.dynamic_batch,
                              opset=args.opset, keep_fp32=keep)
        else:
            out = export_pt2(network, args.out, size, dtype=args.dtype, dynamic_batch=args.dynamic_batch,
                             aoti=args.aoti)
    except (CheckpointError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"sapiens2 export: {e}", file=sys.stderr)
        return 1
    print(f"{out}: {args.format}{' AOTInductor' if args.aoti else ''} {args.dtype} {size[0]}x{size[1]}"
          f"{' any batch' if args.dynamic_batch else ''} ({time.perf_counter() - start:.0f} s)")
    return 0
