"""Training on recorded gameplay: autoencoder -> teacher -> ODE init -> Self Forcing (DMD).

One generic loop (trainer.py, with state.py: the state on disk, throughput.py: throughput.json,
distributed.py: several GPUs under torchrun) and one file per stage (base.py: the Stage interface;
ae.py, teacher.py, ode.py, self_forcing.py); pipeline.py makes them commands (`worldmodel train
...`, `python -m worldmodel.train ...` under torchrun), all_stages.py runs them all (`train all`),
cli.py holds their arguments, report.py reads a run back.
"""
