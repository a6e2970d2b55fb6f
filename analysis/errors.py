"""Errors the analysis raises for bad input (one line, naming the file)."""


class AnalysisError(Exception):
    pass
