"""Infrastructure the cases stand on: data checks, metrics, artifacts, ONNX, serving, benchmarks.

Small flat modules of pure functions. Nothing here knows the subject of a case (its model, its
features, its loss); that stays in the case.
"""
