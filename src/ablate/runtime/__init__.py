"""Stage 4, runtime: the training job and everything around one run or one sweep.

The job (``job``: check -> build -> fit -> test -> record), run folders (``rundir``), signals (``interrupt``), resume
and checkpoint files (``resume``, ``checkpoint_io``), results.json and history.csv (``results``, ``history``), loggers,
the console, sweep jobs and their recap (``sweep_objective``, ``sweep_recap``), the command line (``cli``). May
import: config, build, training and the libraries. Never evaluation or report.
"""
