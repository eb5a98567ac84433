"""Compress a distilled student: structured pruning, KD recovery, int8 quantization, ONNX export.

    python recipes/compress.py                  # demo: the cached KD student, ~half its MACs, table printed
    python recipes/compress.py --seeds 0 1 2    # prune + KD recovery vs prune + plain fine-tuning
    python recipes/compress.py --student outputs/kd/student --teachers resnet18 --target_ratio 0.3

See docs/compression.md; needs `pip install -e ".[compress]"`.
"""
from hfkd.cli.compress import main

if __name__ == "__main__":
    main()
