"""driftloop's benchmarks (`make bench` -> BENCHMARKS.md); not part of `make test`.

Every figure is measured on this machine in one run, side by side with its peer (ratios of
alternating runs, medians), because these machines' speed drifts by 2x hour to hour.
"""
