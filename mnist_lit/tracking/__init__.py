"""Where a run writes and what it leaves: the run folder and its layout (runs.py), TensorBoard's
tags, HParams and Custom Scalars (tensorboard.py), metrics.json (metrics_file.py), the pictures
(pictures.py), predict's CSV (predictions.py) and `mnist-lit report` (report.py)."""
