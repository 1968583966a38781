"""Figures and tables of the report, drawn from the hierarchy tables alone (no fits are recomputed).

Every figure shows each kind of feature present in the tables (activations, gradients, or any further kind) side
by side, with a colour per kind, the group result and the subjects. What each table holds: docs/report.md.
Modules: ``style`` (palettes, panels), ``fmri``, ``surface`` and ``meg`` (the figures), ``tables`` (the summary figure
and the HTML tables), ``stage`` (the rule's edge, ``draw_figures``).
"""
