"""Helpers shared by the test modules (import as ``from helpers.<module> import ...``; pytest puts tests/ on
sys.path). Fixtures stay in conftest.py; plain functions live here, so no test imports from conftest."""
