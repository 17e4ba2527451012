"""The chaos suite: clients leaving at random moments, the engine dying or going silent, slow readers and
connection floods beside normal traffic. The machinery (clients, plans, leak checks) is in
:mod:`tests.chaos.clients`; ``bench/chaos.py`` runs the same at a larger scale."""
