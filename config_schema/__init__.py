"""Config schema machinery that belongs to no layer: the domains of numeric config keys
(`domains.py`) and a walk over a config dataclass's keys (`keys.py`). It imports only the
standard library, so every package may import it: each package declares its own config
section's domains with these types (annotator/config.py, cluster/config.py), and nothing in it
knows about any package (tests/test_layout.py puts it below actors/)."""
