"""The arith world: task.py (prompts, attributes, data sets), gold.py (gold and verifier), zoo.py (recipe)."""
