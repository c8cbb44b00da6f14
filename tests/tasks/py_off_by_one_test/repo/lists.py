def last_n(items, n):
    """The last n items, in order."""
    if n <= 0:
        return []
    return items[-n + 1:]
