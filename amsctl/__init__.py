"""``amsctl``: the operator's command line."""
