"""edgekit.runtimes"""
