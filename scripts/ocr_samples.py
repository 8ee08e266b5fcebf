"""Real inputs for the OCR models of the rapidocr-onnxruntime wheel: rendered text lines.

The wheel ships its models but no images, so text lines are drawn with OpenCV (several Hershey
fonts, sizes and stroke widths, anti-aliased, black on white, like the crops rapidocr's detector
hands on) and preprocessed by rapidocr's own classes, exactly as its pipeline feeds the models.
Half of the classifier's lines are turned by 180 degrees, so its two classes both occur.

    python scripts/ocr_samples.py --out DIR [--count 200]   # writes cls.npz and rec.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rapidocr_onnxruntime
from rapidocr_onnxruntime.ch_ppocr_cls import TextClassifier
from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
from rapidocr_onnxruntime.utils import read_yaml

RAPIDOCR_ROOT = Path(rapidocr_onnxruntime.__file__).resolve().parent
CLS_MODEL = RAPIDOCR_ROOT / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
REC_MODEL = RAPIDOCR_ROOT / "models" / "ch_PP-OCRv4_rec_infer.onnx"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "inference",
    "server",
    "model",
    "version",
    "batch",
    "queue",
    "latency",
    "throughput",
    "ONNX",
    "Runtime",
    "ortserve",
    "Triton",
    "2024",
    "invoice",
    "total",
    "42.00",
    "EUR",
    "order",
    "shipped",
    "today",
]
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def rapidocr_config(section: str) -> dict[str, Any]:
    config = dict(read_yaml(RAPIDOCR_ROOT / "config.yaml")[section])
    config["model_path"] = str(RAPIDOCR_ROOT / config["model_path"])
    return config


def render_line(text: str, font: int = cv2.FONT_HERSHEY_SIMPLEX, scale: float = 1.0, thickness: int = 2) -> np.ndarray:
    """A black-on-white BGR text line with a small margin."""
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    image = np.full((height + baseline + 16, width + 16, 3), 255, np.uint8)
    cv2.putText(image, text, (8, height + 8), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return image


def random_lines(count: int, seed: int, max_words: int = 3) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        text = " ".join(rng.choice(WORDS, int(rng.integers(1, max_words + 1))))
        image = render_line(text, FONTS[index % len(FONTS)], float(rng.uniform(0.8, 1.5)), int(rng.integers(1, 3)))
        lines.append((text, image))
    return lines


def classifier_samples(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x [count, 3, 48, 192] FP32, true labels: 0 upright, 1 turned by 180 degrees)."""
    classifier = TextClassifier(rapidocr_config("Cls"))
    images, labels = [], []
    for index, (_, image) in enumerate(random_lines(count, seed)):
        turned = index % 2 == 1
        images.append(classifier.resize_norm_img(cv2.rotate(image, cv2.ROTATE_180) if turned else image))
        labels.append(int(turned))
    return np.stack(images).astype(np.float32), np.asarray(labels)


def recognizer_samples(count: int, seed: int = 1) -> tuple[np.ndarray, list[str]]:
    """(x [count, 3, 48, 320] FP32: rapidocr's default line shape, the texts drawn)."""
    recognizer = TextRecognizer(rapidocr_config("Rec"))
    _, height, width = recognizer.rec_image_shape
    lines = random_lines(count, seed, max_words=2)
    batch = [recognizer.resize_norm_img(image, width / height) for _, image in lines]
    return np.stack(batch).astype(np.float32), [text for text, _ in lines]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    x, _ = classifier_samples(args.count)
    np.savez(args.out / "cls.npz", x=x)
    x, _ = recognizer_samples(args.count)
    np.savez(args.out / "rec.npz", x=x)
    print(f"wrote {args.out / 'cls.npz'} and {args.out / 'rec.npz'} ({args.count} lines each)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
