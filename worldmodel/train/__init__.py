"""Training on recorded gameplay: autoencoder -> teacher -> ODE init -> Self Forcing (DMD).

One generic loop (trainer.py) and one file per stage (ae.py, teacher.py, ode.py,
self_forcing.py); pipeline.py makes them commands (`worldmodel train ...`,
`python -m worldmodel.train ...` under torchrun).
"""
