"""Measuring a world model the way a player sees it (`worldmodel eval`, `eval-ruler`, `eval-compare`,
`ladder`).

- settings.py: the options (no PyTorch); cli.py: the commands
- metrics.py: PSNR, SSIM, sharpness, Frechet and nearest-neighbour distances
- probe.py: the inverse-dynamics probe; ruler.py: one fixed probe and reference set per game
- provenance.py: what a model trained on, and whether the evaluated episodes are among it
- rollouts.py: short and long rollouts, the real twin, per-frame and per-bucket measures
- run.py: `worldmodel eval`; verdicts.py: its goals met or not; report.py: eval.md and pictures
- results.py: eval.json's format and writing; compare.py: `eval-compare`
- ladder.py: every stage of a training run measured the same way (`worldmodel ladder`); rungs.py:
  the measures that run a network itself; ladder_report.py: ladder.md and sheet.png
"""
