"""The EqProp models and everything that trains and studies them.

``data.py`` (IDX files, SHA-256), ``topology.py`` (layered networks and Algorithm 1),
``energy.py`` (eqs. 1-4), ``float_net.py`` (eqs. 5, 7, 8 in float), ``numerics.py``,
``fixed_net.py`` and ``golden.py`` (the fixed-point model of docs/numerics.md and its
fxpmath twin), ``settle.py`` (the settle rule, §4a), ``train.py`` (runs, checkpoints,
metrics), ``study.py`` (study grids, local or on Ray), ``gradcheck.py`` (gradient
alignment), ``report.py``, and ``cli.py``, which builds the ``eqprop`` command from its
own commands and the ``add_parser`` of hdl/ and sim/.
"""
