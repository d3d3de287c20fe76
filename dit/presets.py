"""Named Latte DiT sizes: keyword arguments for `LatteDiT` (depth counts spatial + temporal blocks)."""

# name: (depth, hidden_size, num_heads); the paper's S/B/L/XL and two small sizes for CPU runs and tests.
_SIZES = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}

DIT_PRESETS: dict[str, dict[str, int]] = {
    f"Latte-{size}/{patch}": dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)
    for size, (depth, hidden, heads) in _SIZES.items()
    for patch in (2, 4, 8)
}
DIT_PRESETS["Latte-T/2"] = dict(depth=6, hidden_size=192, num_heads=3, patch_size=2)
DIT_PRESETS["Latte-tiny"] = dict(depth=2, hidden_size=32, num_heads=2, patch_size=2)
