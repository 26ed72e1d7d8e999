"""A few-step student distilled from a trained generator (``fetalflex distill``)."""
