"""Errors the analysis raises for bad input (one line, naming the file)."""


from zaptrace.errors import ZaptraceError


class AnalysisError(ZaptraceError):
    """Bad trace or findings input (one line, naming the file)."""
