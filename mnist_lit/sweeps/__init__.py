"""Many runs: `mnist-lit sweep` (command.py) reads a sweep file (file.py), checks the flags its
trials share (flags.py), records the trials in an Optuna study (study.py) kept in a database
(storage.py), runs each as a `fit` process (trial.py), prunes settings that are clearly worse
(pruning.py), and summarises them as a table with intervals and paired comparisons
(summary.py, significance.py), HParams (hparams.py), TensorBoard bands (bands.py) and a
picture (report.py)."""
