"""Pure-NumPy implementations: the fallback backend and the test oracle.

Readable first, vectorized second. Every native kernel is tested against these.
"""
