"""What rulesets do to every packet at once: the symbolic engine (engine.py) over the packet
space (space.py), and what it answers: the differences between two rulesets (diff.py) and
one packet's way through a ruleset (explain.py). Specified by rulec.ir.evaluate."""
