"""The ek_icount QEMU TCG plugin (ek_icount.c): exact per-instruction counts and ek_marker() hits.

Not Python: this package only carries the C source, which ``edgekit.icount.build_plugin()`` compiles with the
host gcc on first use.
"""
