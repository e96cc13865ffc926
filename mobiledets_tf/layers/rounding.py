"""Channel rounding used by every block: round half up to a multiple of 8, never below 8."""


def round_filters(filters: float, multiplier: float = 1.0, divisor: int = 8, min_value: int = 8) -> int:
    """Returns `max(min_value, int(filters * multiplier / divisor + 0.5) * divisor)`.

    This is the TF1 MobileDets rounding (`_scale_filters` / `round8`): round half up, floor 8, and no
    "do not go below 90%" correction.
    """
    if filters <= 0 or multiplier <= 0:
        raise ValueError(f"filters and multiplier must be positive, got {filters} and {multiplier}")
    return max(min_value, int(filters * multiplier / divisor + 0.5) * divisor)
