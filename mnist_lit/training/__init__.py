"""What a run does around `fit`: the Trainer and the callbacks every run gets (trainer.py), when
checkpoints are written (checkpointing.py) and the random states they hold (random_states.py),
reading and writing the files (checkpoint_io.py), which checkpoint a command continues or
evaluates (resume.py), weight averaging (averaging.py), Ctrl-C that always stops
(interrupts.py) and a quiet console (console.py)."""
