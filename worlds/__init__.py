"""Worlds: a task with its gold and the models and data sets it trains for itself (its zoo).

One package per world (worlds/arith/: task.py, gold.py, zoo.py side by side); worlds/zoo.py builds
and caches any world's zoo artifact by artifact. policies/ keeps the engines.
"""
