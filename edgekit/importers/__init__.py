"""Importers: model files and modules -> edgekit.graph.Graph."""
