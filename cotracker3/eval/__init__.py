"""Evaluation: scoring point trackers on TAP-Vid style benchmarks.

* :mod:`~cotracker3.eval.tapvid`: the TAP-Vid metrics and query sampling, and the
  conversion between TAP-Vid's normalised coordinates and pixels;
* :mod:`~cotracker3.eval.datasets`: readers of the published benchmark files;
* :mod:`~cotracker3.eval.scoring`: running any tracker of the predictor API on a
  dataset (or the held-out synthetic set) and reporting the metrics; the
  visibility-threshold calibration.

Nothing in the inference core imports this package.
"""
