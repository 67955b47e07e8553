"""The supervisor: one process per execution (`python -m emdx.runner ID`), owning it to its end."""
