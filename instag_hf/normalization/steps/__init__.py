"""The aggregation steps of normalization, in the paper's order: rule, semantic, association."""
