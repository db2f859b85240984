"""edgekit.converters"""
