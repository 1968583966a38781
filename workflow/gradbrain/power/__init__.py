"""The power analysis (``snakemake power``): how often each of the study's tests reaches the verdict planted in a
simulated brain, over a grid of noise levels, image counts and subject counts (docs/power.md).

``grid`` (the cells; read when the DAG is built), ``features`` (each model's features on the power crops),
``brains`` (planted brains in memory), ``cell`` (one cell: simulate, encode, score), ``rates`` (``power.csv``),
``figure`` (power curves, operating points), ``stage`` (the rules' edge).
"""
