"""CPU latency of a compressed student against the unpruned one, side by side in one process.

    python benchmarks/compress_latency.py                       # the demo: outputs/compress/student vs the cached KD student
    python benchmarks/compress_latency.py --student DIR --compressed DIR --rounds 50 --threads 1

Every round runs each model once (rotating order); medians in ms and ratios to the unpruned student.
"""
import argparse
import os

import torch


def main(argv=None):
    from hfkd.compress.export import INT8_FILE, ONNX_FILE, onnx_predict
    from hfkd.compress.measure import interleaved_latency, torch_predict
    from hfkd.cli.demo import demo_student_path
    from hfkd.hub import from_pretrained

    demo = demo_student_path(seed=0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=demo, help="the unpruned student folder")
    parser.add_argument("--compressed", default="outputs/compress/student", help="the folder compress_student wrote")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    student, compressed = from_pretrained(args.student), from_pretrained(args.compressed)
    predicts = {"unpruned (PyTorch fp32)": torch_predict(student), "pruned (PyTorch fp32)": torch_predict(compressed),
                "pruned (ONNX fp32)": onnx_predict(os.path.join(args.compressed, ONNX_FILE)),
                "pruned (ONNX int8)": onnx_predict(os.path.join(args.compressed, INT8_FILE))}
    result = interleaved_latency(predicts, student.preprocess.input_size, rounds=args.rounds)
    base = result["unpruned (PyTorch fp32)"]
    print(f"\n{torch.get_num_threads()} thread(s), median of {args.rounds} interleaved rounds\n")
    print("| model | batch 1 (ms) | batch 32 (ms) |\n|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['b1']:.2f} (x{r['b1'] / base['b1']:.2f}) | {r['b32']:.2f} (x{r['b32'] / base['b32']:.2f}) |")
    return result


if __name__ == "__main__":
    main()
