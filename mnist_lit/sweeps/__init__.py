"""Many runs: `mnist-lit sweep` (command.py) reads a sweep file (file.py), checks the flags its
trials share (flags.py), records the trials in an Optuna study (study.py), runs each as a `fit`
process (trial.py), and summarises them as a table (summary.py), HParams (hparams.py) and a
picture (report.py)."""
